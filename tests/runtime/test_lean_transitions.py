"""An ordinary transition rewrites only what changed in the run's indexed columns.

The instance row's status, due time and lease owner change only now and then
(a run starts, waits, sleeps, ends); its lease expiry changes when the lease
is renewed. A transition that changes none of them leaves them out of its
UPDATE, so no index entry is rewritten, and leaves a lease renewed a moment
ago to the lease keeper. What a user sees: the row is as before, leases hold
however long the run takes, and no other engine takes a run over.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import attrs

from statesaga import Engine, Saga, State, Status, StepContext
from statesaga.store import SqlStore


@attrs.frozen
class Order:
    order_id: str


@attrs.frozen
class Seen:
    expiries: tuple[float, ...] = ()
    statuses: tuple[str, ...] = ()


calls: Counter[str] = Counter()
calls_lock = threading.Lock()
PAUSE = {"seconds": 0.0}


def look(ctx: StepContext[Order, Seen]) -> Seen:
    """Record the row's lease expiry and status as this step sees them, after a pause."""
    with calls_lock:
        calls[f"{ctx.instance_id}:{ctx.step}"] += 1
    time.sleep(PAUSE["seconds"])
    row = READ["store"].get(ctx.instance_id)
    assert row is not None
    assert row.lease_expires_at is not None
    return Seen((*ctx.data.expiries, row.lease_expires_at), (*ctx.data.statuses, row.status))


READ: dict[str, SqlStore] = {}  # the store the steps look at


class Steps(Saga[Order, Seen]):
    name = "lean-steps"
    s0 = State(initial=True)
    s1 = State()
    s2 = State()
    s3 = State()
    s4 = State()
    s5 = State()
    s6 = State(final=True)
    t1 = s0.to(s1).run(look, read_only=True)
    t2 = s1.to(s2).run(look, read_only=True)
    t3 = s2.to(s3).run(look, read_only=True)
    t4 = s3.to(s4).run(look, read_only=True)
    t5 = s4.to(s5).run(look, read_only=True)
    t6 = s5.to(s6).run(look, read_only=True)


def test_quick_steps_keep_the_lease_their_start_wrote_and_the_row_ends_right(db: str) -> None:
    store = SqlStore(db, auto_migrate=True)
    engine = Engine(store, sagas=[Steps], lease_ttl=60.0)
    READ["store"], PAUSE["seconds"] = store, 0.0
    try:
        started_at = time.time()
        run = engine.start(Steps, Order("o-1"), key="o-1", idempotency_key="o-1")
        assert run.status is Status.COMPLETED
        data = run.data
        assert isinstance(data, Seen)
        # every step saw the lease the start wrote: no transition renewed it, none needed to
        assert len(set(data.expiries)) == 1
        assert started_at + 60.0 <= data.expiries[0] <= time.time() + 60.0
        assert set(data.statuses) == {"running"}
        row = store.get(run.id)
        assert row is not None
        ended = (row.status, row.state, row.lease_owner, row.lease_expires_at, row.due_at)
        assert ended == ("completed", "s6", None, None, None)
        assert row.version == 7
        # the key is free again: the unique index saw the status change
        assert engine.start(Steps, Order("o-1"), key="o-1").status is Status.COMPLETED
    finally:
        engine.close()


def test_a_run_slower_than_its_lease_is_renewed_and_never_taken_over(db: str) -> None:
    """Steps each shorter than a renewal's worth, adding up to more than the lease ttl."""
    ttl = 0.6
    store = SqlStore(db, auto_migrate=True, pool_size=2, max_overflow=2, hot_connections=2)
    first = Engine(store, sagas=[Steps], lease_ttl=ttl)
    other = Engine(
        SqlStore(db, pool_size=2, max_overflow=2, hot_connections=2), sagas=[Steps], lease_ttl=ttl
    )
    READ["store"], PAUSE["seconds"] = store, 0.08  # under ttl/6: a transition leaves the lease
    stop = threading.Event()
    recovered: list[str] = []

    def recover_in_a_loop() -> None:
        while not stop.is_set():
            recovered.extend(run.id for run in other.recover())
            time.sleep(0.02)

    thief = threading.Thread(target=recover_in_a_loop)
    thief.start()
    try:
        runs = [first.start(Steps, Order(f"o-{n}"), key=f"o-{n}") for n in range(3)]
    finally:
        stop.set()
        thief.join()
    try:
        for run in runs:
            assert run.status is Status.COMPLETED
            steps = {name: count for name, count in calls.items() if name.startswith(run.id)}
            assert sorted(steps.values()) == [1] * 6, f"a step ran twice: {steps}"
            data = run.data
            assert isinstance(data, Seen)
            assert data.expiries == tuple(sorted(data.expiries))
            assert data.expiries[-1] > data.expiries[0], "nothing renewed the lease"
        assert recovered == [], "the other engine took a run over"
    finally:
        first.close()
        other.close()
