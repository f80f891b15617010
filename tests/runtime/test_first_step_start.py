"""A run whose first step is transactional is inserted in that step's transaction.

The start and the first transition commit together, in one transaction: one
commit fewer per run, and a start refused there (its entity key busy) rolls the
step's writes back with it. A first step that fails leaves the run recorded as
any start would be; a start with an idempotency key is written first, as
before (a racing duplicate is then looked up).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest
import sagas
import sqlalchemy as sa
from sagas import Fatal, Order, TransactionalFirst, journal
from services import truncate

from statesaga import AsyncEngine, ConnectionLost, Engine, EntityBusy, HistoryKind, Run, Status
from statesaga.observability import Observer
from statesaga.store import SqlStore
from statesaga.store.hooks import StoreWrite, WriteMoment


@pytest.fixture(autouse=True)
def _fresh_journal() -> Iterator[None]:
    journal.reset()
    yield
    journal.reset()  # no hook of these tests is left for the next module's


def make_engine(db: str, **options: object) -> Engine:
    store = SqlStore(db)
    sagas.effects.metadata.create_all(store.engine)
    return Engine(store, sagas=[TransactionalFirst], **options)  # type: ignore[arg-type]


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    with make_engine(db) as opened:
        yield opened


def effects_of(engine: Engine) -> list[tuple[str, str]]:
    store: SqlStore = engine.store  # type: ignore[assignment]
    with store.reading() as connection:
        rows = connection.execute(sa.select(sagas.effects.c.instance_id, sagas.effects.c.step))
        return [(row.instance_id, row.step) for row in rows]


def history(engine: Engine, run_id: str) -> list[tuple[HistoryKind, str | None, int]]:
    return [(h.kind, h.transition, h.version) for h in engine.get(run_id).history]


def test_the_start_and_the_first_transition_are_one_write(engine: Engine) -> None:
    writes: list[tuple[str, tuple[str, ...], bool]] = []

    def hook(moment: WriteMoment, write: StoreWrite) -> None:
        if moment is WriteMoment.COMMITTED:
            writes.append((write.instance_id, tuple(h.kind for h in write.history), write.start))

    engine.store.hook = hook  # type: ignore[attr-defined]
    run = engine.start(TransactionalFirst, Order("f-1"), key="order:f-1")

    assert (run.status, run.state) == (Status.WAITING, "reserved")
    assert writes == [(run.id, ("start", "forward"), True)]
    assert history(engine, run.id) == [
        (HistoryKind.START, None, 1),
        (HistoryKind.FORWARD, "reserve", 2),
    ]
    assert effects_of(engine) == [(run.id, "reserve")]
    assert engine.send("go", instance_id=run.id).run.status is Status.COMPLETED


def test_a_first_step_that_fails_leaves_the_run_recorded_and_nothing_of_the_step(
    engine: Engine,
) -> None:
    journal.fail["reserve"], journal.error["reserve"] = 1, Fatal

    run = engine.start(TransactionalFirst, Order("f-2"), key="order:f-2")

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert "reserve failed" in run.error.message
    kinds = [kind for kind, _, _ in history(engine, run.id)]
    assert kinds[0] is HistoryKind.START
    assert HistoryKind.FAILURE in kinds
    assert effects_of(engine) == []  # the step's row rolled back with its transaction
    assert [r.id for r in engine.list(key="order:f-2")] == [run.id]


def test_a_connection_lost_writing_the_start_is_written_again_once(engine: Engine) -> None:
    lost: list[str] = []

    def lose_once(moment: WriteMoment, write: StoreWrite) -> None:
        if moment is WriteMoment.BEFORE_COMMIT and write.start and not lost:
            lost.append(write.instance_id)
            raise ConnectionLost("the database connection died (injected)")

    engine.store.hook = lose_once  # type: ignore[attr-defined]
    run = engine.start(TransactionalFirst, Order("f-3"), key="order:f-3")

    assert lost == [run.id]
    assert (run.status, run.state) == (Status.WAITING, "reserved")
    assert effects_of(engine) == [(run.id, "reserve")]  # the step ran twice, committed once
    assert journal.names() == ["reserve", "reserve"]
    assert [r.id for r in engine.list(key="order:f-3")] == [run.id]


def test_a_first_step_slower_than_the_lease_renewals_keeps_its_run(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the keeper renews every lease many times while the step runs: a run not written
    # yet has none to lose, and is written with a fresh one
    journal.hooks["reserve"] = lambda ctx: threading.Event().wait(0.6)
    with caplog.at_level(logging.WARNING), make_engine(db, lease_ttl=0.3) as engine:
        run = engine.start(TransactionalFirst, Order("f-4"), key="order:f-4")

        assert (run.status, run.state) == (Status.WAITING, "reserved")
        assert effects_of(engine) == [(run.id, "reserve")]
    assert not [r for r in caplog.records if "lost the lease" in r.getMessage()]


def test_many_starts_of_one_key_at_once_leave_one_run_and_one_step_s_writes(db: str) -> None:
    engines = [make_engine(db) for _ in range(4)]
    # the winner holds its first step's transaction open while the others arrive
    journal.hooks["reserve"] = lambda ctx: threading.Event().wait(0.05)
    gate = threading.Barrier(12)
    started: list[str] = []
    busy: list[EntityBusy] = []
    other: list[BaseException] = []

    def start(number: int) -> None:
        gate.wait()
        try:
            run = engines[number % 4].start(TransactionalFirst, Order("f-5"), key="cart:f-5")
            started.append(run.id)
        except EntityBusy as error:
            busy.append(error)
        except BaseException as error:
            other.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        engine = engines[0]
        assert other == []
        assert len(started) == 1
        assert len(busy) == 11
        (winner,) = started
        assert [r.id for r in engine.list(key="cart:f-5")] == [winner]
        # a refused start's step wrote in a transaction that rolled back: one row, the winner's
        assert effects_of(engine) == [(winner, "reserve")]
        assert all("cart:f-5" in str(error) for error in busy)
    finally:
        for opened in engines:
            opened.close()


def test_the_start_is_reported_once_after_it_committed(db: str) -> None:
    seen: list[tuple[str, bool]] = []

    class Started(Observer):
        def run_started(self, *, saga: str, instance_id: str, correlation_id: str) -> None:
            seen.append((instance_id, engine.store.get(instance_id) is not None))

    lost: list[str] = []

    def lose_once(moment: WriteMoment, write: StoreWrite) -> None:
        if moment is WriteMoment.BEFORE_COMMIT and write.start and not lost:
            lost.append(write.instance_id)
            raise ConnectionLost("the database connection died (injected)")

    with make_engine(db, observer=Started()) as engine:
        engine.store.hook = lose_once  # type: ignore[attr-defined]
        run = engine.start(TransactionalFirst, Order("f-6"), key="order:f-6")

    assert lost == [run.id]  # its first try rolled back: reported once, for the one that counts
    assert seen == [(run.id, True)]


def test_an_async_engine_starts_it_in_the_step_s_transaction_too(db: str) -> None:
    store = SqlStore(db)
    sagas.effects.metadata.create_all(store.engine)
    journal.hooks["reserve"] = lambda ctx: threading.Event().wait(0.05)

    async def main() -> list[Run | BaseException]:
        async with AsyncEngine(store, sagas=[TransactionalFirst]) as engine:
            starts = [
                engine.start(TransactionalFirst, Order("f-7"), key="cart:f-7") for _ in range(8)
            ]
            return await asyncio.wait_for(
                asyncio.gather(*starts, return_exceptions=True), timeout=60
            )

    try:
        answers = asyncio.run(main())
        runs = [a for a in answers if isinstance(a, Run)]
        assert len(runs) == 1
        assert all(isinstance(a, EntityBusy) for a in answers if not isinstance(a, Run))
        (run,) = runs
        assert (run.status, run.state) == (Status.WAITING, "reserved")
        with Engine(db, sagas=[TransactionalFirst]) as engine:
            assert [r.id for r in engine.list(key="cart:f-7")] == [run.id]
            assert effects_of(engine) == [(run.id, "reserve")]
    finally:
        store.close()


def test_an_event_sent_while_a_transactional_step_runs_is_taken_in_its_transaction(
    postgres_url: str,
) -> None:
    # PostgreSQL: the sender records the event while the step's transaction is open (on
    # SQLite it would wait for that transaction's write lock); the step's transition into
    # the waiting state reads the inbox in its own transaction and takes the event there
    truncate(postgres_url)
    with make_engine(postgres_url) as engine, make_engine(postgres_url) as sender:
        journal.hooks["reserve"] = lambda ctx: sender.send("go", instance_id=ctx.instance_id)
        # an idempotency key: the run is written before its first step, so it can be sent to
        run = engine.start(TransactionalFirst, Order("f-8"), key="order:f-8", idempotency_key="f-8")

        assert run.status is Status.COMPLETED
        assert [(kind, name) for kind, name, _ in history(engine, run.id)][-1] == (
            HistoryKind.EVENT,
            "proceed",
        )
