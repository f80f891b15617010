"""Contention is normal: events, cancels, timeouts and starts that race each other.

Every test runs on SQLite and PostgreSQL (when reachable), with the store's row
lease alone and with SQL and Redis entity locks on top. Two engines stand for
two processes: a holder driving a run, and a sender, a worker or a second
storefront request arriving at the same moment.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sagas
from sagas import Order, Pivoted, journal

from statesaga import Delivery, DeliveryStatus, Engine, EntityBusy, Status
from statesaga.core import due_when_let_go
from statesaga.locks.base import Lease
from statesaga.store import SqlStore
from statesaga.testing import FakeClock

Factory = Callable[..., Engine]


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


@pytest.fixture(params=["row lease", "sql locks", "redis locks"])
def engines(db: str, request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Makes engines that share one store and one kind of entity lock, like processes do."""
    from statesaga.locks import SqlLocks

    opened: list[Engine] = []
    namespace = f"statesaga-test:{uuid.uuid4().hex}:"
    redis_locks: list[Any] = []

    def make(**options: Any) -> Engine:
        options.setdefault("sagas", [sagas.Waiting, Pivoted])
        if request.param == "row lease":
            engine = Engine(db, **options)
        elif request.param == "sql locks":
            store = SqlStore(db)
            engine = Engine(store, locks=SqlLocks(store), **options)
        else:
            from statesaga.locks import RedisLocks

            locks = RedisLocks(request.getfixturevalue("redis_url"), namespace=namespace)
            redis_locks.append(locks)
            engine = Engine(db, locks=locks, **options)
        opened.append(engine)
        return engine

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for engine in opened:
        engine.close()
    for locks in redis_locks:
        for key in locks.client.scan_iter(f"{namespace}*"):
            locks.client.delete(key)
        locks.close()


def hold_entity(engine: Engine, run_id: str, key: str, now: float) -> Callable[[], None]:
    """Someone else holds the run (its entity lock, or its row); returns how to let go."""
    if engine.locks is not None:
        lease: Lease | None = engine.locks.try_acquire(key, "storefront", 30.0, now)  # type: ignore[union-attr]
        assert lease is not None
        return lambda: engine.locks.release(lease)  # type: ignore[union-attr]
    row = engine.store.get(run_id)
    assert row is not None
    claimed = engine.store.claim(run_id, row.version, "storefront", now + 30.0, now)
    return lambda: engine.store.release_lease(
        run_id, claimed.epoch, due_when_let_go(Status(claimed.status), claimed.due_at, now)
    )


# -- events that come while someone holds the run ---------------------------------------------


def test_an_event_sent_while_the_run_is_held_is_kept_and_taken_once_it_is_free(
    engines: Factory,
) -> None:
    holder, sender = engines(), engines()
    run = holder.start(sagas.Waiting, Order("c-1"), key="cart:c-1")
    let_go = hold_entity(holder, run.id, "cart:c-1", holder.clock())

    delivery = sender.send("confirmed", {"code": "3ds-ok"}, instance_id=run.id, event_id="wh-1")

    assert (delivery.status, delivery.duplicate) == (DeliveryStatus.PENDING, False)
    assert delivery.run.status is Status.WAITING
    assert "confirm" not in journal.names()
    let_go()
    # nobody retried: a worker finds the run through its inbox and takes the event
    (taken,) = engines().recover()
    assert (taken.id, taken.status) == (run.id, Status.COMPLETED)
    assert [(e.event_id, e.status) for e in holder.get(run.id).inbox] == [
        ("wh-1", DeliveryStatus.ACCEPTED)
    ]
    assert journal.names().count("confirm") == 1


def test_an_event_sent_while_a_step_runs_is_taken_by_the_holder_before_it_lets_go(
    engines: Factory,
) -> None:
    holder, sender = engines(), engines()
    sent: list[Delivery] = []
    journal.hooks["reserve"] = lambda ctx: sent.append(
        sender.send("confirmed", {"code": "early"}, instance_id=ctx.instance_id)
    )

    run = holder.start(sagas.Waiting, Order("c-2"), key="cart:c-2")

    assert sent[0].status is DeliveryStatus.PENDING  # the run was busy: kept, not refused
    assert run.status is Status.COMPLETED  # the holder took it on reaching the wait
    assert holder.get(run.id).inbox[0].status is DeliveryStatus.ACCEPTED


def test_a_cancel_sent_while_a_step_runs_is_applied_before_the_run_waits(
    engines: Factory,
) -> None:
    holder, sender = engines(), engines()
    sent: list[Delivery] = []
    journal.hooks["reserve"] = lambda ctx: sent.append(
        sender.cancel(ctx.instance_id, reason="customer left")
    )

    run = holder.start(sagas.Waiting, Order("c-3"), key="cart:c-3")

    assert sent[0].status is DeliveryStatus.PENDING
    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.message == "customer left"
    assert journal.names() == ["reserve", "undo_reserve"]


def test_many_deliveries_of_one_event_at_once_apply_it_once_and_never_fail(
    engines: Factory,
) -> None:
    first = engines()
    run = first.start(sagas.Waiting, Order("c-4"), key="cart:c-4")
    senders = [engines() for _ in range(4)]
    start = threading.Barrier(16)
    answers: list[Delivery] = []
    errors: list[BaseException] = []

    def deliver(number: int) -> None:
        start.wait()
        # the provider retries one webhook (same id) and also sends a second one (new id)
        event_id = "wh-same" if number % 2 else f"wh-{number}"
        try:
            answers.append(
                senders[number % 4].send(
                    "confirmed", {"code": "ok"}, instance_id=run.id, event_id=event_id
                )
            )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.recover()  # whatever stayed pending is settled by a worker

    assert errors == []
    assert len(answers) == 16
    assert journal.names().count("confirm") == 1
    settled = first.get(run.id)
    assert settled.status is Status.COMPLETED
    statuses = [entry.status for entry in settled.inbox]
    assert len(statuses) == 9  # one "wh-same" and eight distinct ids, each recorded once
    assert statuses.count(DeliveryStatus.ACCEPTED) == 1
    assert statuses.count(DeliveryStatus.REJECTED) == 8


# -- timeouts and late events ------------------------------------------------------------------


def test_a_timeout_that_finds_the_run_held_leaves_it_due_never_stranded(
    engines: Factory,
) -> None:
    clock = FakeClock()
    shop, worker = engines(clock=clock), engines(clock=clock)
    run = shop.start(sagas.Waiting, Order("c-5"), key="cart:c-5")
    clock.advance(61)  # the wait timed out; nothing fired it yet
    let_go = hold_entity(shop, run.id, "cart:c-5", clock())

    worker.recover()  # finds the run due, but someone holds it

    row = shop.store.get(run.id)
    assert row is not None
    assert row.status == "waiting"
    assert row.lease_owner is None or row.lease_owner == "storefront"
    assert row.lease_owner is not None or row.due_at is not None
    let_go()
    clock.advance(31)  # past the busy back-off (and any lease the holder left to expire)
    (fired,) = worker.recover()
    assert (fired.id, fired.status, fired.error.type) == (  # type: ignore[union-attr]
        run.id,
        Status.COMPENSATED,
        "WaitTimedOut",
    )
    assert worker.recover() == []


def test_a_late_event_gets_one_answer_whichever_path_fired_the_timeout(
    engines: Factory,
) -> None:
    clock = FakeClock()
    engine = engines(clock=clock)
    sent_first = engine.start(sagas.Waiting, Order("c-6"))
    fired_first = engine.start(sagas.Waiting, Order("c-7"))
    clock.advance(61)

    # the event reaches one run before anything fired its timeout ...
    before = engine.send("confirmed", {"code": "late"}, instance_id=sent_first.id)
    # ... and the other only after a worker fired it
    engine.recover()
    after = engine.send("confirmed", {"code": "late"}, instance_id=fired_first.id)

    assert (before.status, after.status) == (DeliveryStatus.REJECTED, DeliveryStatus.REJECTED)
    assert before.run.status is after.run.status is Status.COMPENSATED
    assert before.reason == "'confirmed' arrived after the wait in state 'awaiting' timed out"
    assert after.reason == "the run had ended (compensated) when 'confirmed' was consumed"
    assert "confirm" not in journal.names()


def test_an_event_received_before_the_timeout_is_taken_even_if_consumed_after(
    engines: Factory,
) -> None:
    clock = FakeClock()
    engine = engines(clock=clock)
    run = engine.start(sagas.Waiting, Order("c-8"), key="cart:c-8")
    let_go = hold_entity(engine, run.id, "cart:c-8", clock())
    clock.advance(20)
    pending = engine.send("confirmed", {"code": "in time"}, instance_id=run.id)
    assert pending.status is DeliveryStatus.PENDING
    let_go()
    clock.advance(50)  # the wait's 60 s are over by the time anything reads the inbox

    (done,) = engine.recover()

    assert done.status is Status.COMPLETED
    assert engine.get(run.id).inbox[0].status is DeliveryStatus.ACCEPTED


# -- idempotent starts ---------------------------------------------------------------------------


def test_concurrent_starts_with_one_idempotency_key_all_get_the_one_run(
    engines: Factory,
) -> None:
    racers = [engines() for _ in range(4)]
    gate = threading.Barrier(8)
    journal.hooks["reserve"] = lambda ctx: threading.Event().wait(0.2)  # the winner holds on
    runs: list[str] = []
    errors: list[BaseException] = []

    def start(number: int) -> None:
        gate.wait()
        try:
            run = racers[number % 4].start(
                sagas.Waiting, Order("c-9"), key="cart:c-9", idempotency_key="complete:c-9"
            )
            runs.append(run.id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(runs) == 8
    assert len(set(runs)) == 1
    assert journal.names().count("reserve") == 1


def test_a_start_on_a_key_held_by_another_request_s_run_is_still_busy(
    engines: Factory,
) -> None:
    engine = engines()
    engine.start(sagas.Waiting, Order("c-10"), key="cart:c-10", idempotency_key="first")

    with pytest.raises(EntityBusy):
        engine.start(sagas.Waiting, Order("c-10"), key="cart:c-10", idempotency_key="second")


# -- pivots that may have taken effect ---------------------------------------------------------


def test_a_deadline_never_compensates_before_a_pivot_whose_outcome_is_unknown(
    engines: Factory,
) -> None:
    clock = FakeClock()
    engine = engines(clock=clock)

    def lost_answer(ctx: Any) -> None:
        if ctx.attempt == 1:  # the capture went through, its answer was lost; time passes
            clock.advance(120)

    journal.hooks["capture"] = lost_answer
    journal.fail["capture"] = 1

    run = engine.start(Pivoted, Order("c-11"), deadline=60)

    assert run.status is Status.COMPLETED
    assert "undo_reserve" not in journal.names()
    assert journal.names().count("capture") == 2


def test_a_cancel_is_refused_once_a_pivot_may_have_taken_effect(engines: Factory) -> None:
    clock = FakeClock()
    engine = engines(clock=clock, max_inline_sleep=0.0)
    journal.fail["capture"] = -1  # its outcome stays unknown: every try fails retryably

    run = engine.start(Pivoted, Order("c-12"))
    assert run.status is Status.RUNNING  # released until its next try

    refused = engine.cancel(run.id, reason="too late")
    assert refused.status is DeliveryStatus.REJECTED
    assert refused.reason == "its pivot step may have taken effect, so it only goes forward"
    assert "undo_reserve" not in journal.names()


def test_recovery_leaves_a_held_run_with_a_pending_event_for_later_and_returns(
    engines: Factory,
) -> None:
    clock = FakeClock()
    holder, worker = engines(clock=clock), engines(clock=clock)
    run = holder.start(sagas.Waiting, Order("c-13"), key="cart:c-13")
    let_go = hold_entity(holder, run.id, "cart:c-13", clock())
    assert holder.send("confirmed", {"code": "ok"}, instance_id=run.id).status is (
        DeliveryStatus.PENDING
    )

    assert worker.recover() == []  # the entity is held: tried once, left due, no spinning
    assert worker.recover() == []  # and not tried again at once

    let_go()
    clock.advance(1)
    (done,) = worker.recover()
    assert done.status is Status.COMPLETED
