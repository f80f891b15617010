"""Declared migrations on SQLite and PostgreSQL: runs of version 1 move onto version 2."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from migration_sagas import Order, OrderV1, OrderV2, OrderV3, Reserved, ReservedV2, journal

from statesaga import (
    AsyncEngine,
    Engine,
    HistoryKind,
    InvalidOperation,
    SagaNotRegistered,
    Status,
)
from statesaga.store import SqlStore


def small_store(db: str) -> SqlStore:
    # a few connections: the PostgreSQL server is shared
    return SqlStore(db, pool_size=2, max_overflow=2, hot_connections=2)


@pytest.fixture(autouse=True)
def _fresh_journal() -> Iterator[None]:
    journal.calls.clear()
    journal.hold = False
    journal.entered.clear()
    journal.gate.clear()
    yield
    journal.gate.set()


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    with Engine(small_store(db), sagas=[OrderV1, OrderV2]) as engine:
        yield engine


def waiting_runs(engine: Engine, count: int) -> list[str]:
    ids = []
    for n in range(count):
        run = engine.start(OrderV1, Order(f"o-{n}"), key=f"order:o-{n}")
        assert (run.status, run.state, run.version) == (Status.WAITING, "awaiting_payment", 1)
        ids.append(run.id)
    return ids


def test_migrate_moves_waiting_runs_which_then_complete_on_version_2(
    engine: Engine, db: str
) -> None:
    ids = waiting_runs(engine, 2)

    report = engine.migrate(OrderV2, from_version=1)

    assert (report.saga, report.from_version, report.to_version) == ("order", 1, 2)
    assert sorted(e.instance_id for e in report.moved) == sorted(ids)
    assert {(e.from_state, e.to_state, e.outcome) for e in report.entries} == {
        ("awaiting_payment", "awaiting_confirmation", "moved")
    }
    moved = engine.get(ids[0], saga=OrderV2)
    assert (moved.version, moved.state) == (2, "awaiting_confirmation")
    assert moved.status is Status.WAITING
    assert moved.data == ReservedV2(reserved=True, note="moved from v1")
    last = moved.history[-1]
    assert (last.kind, last.from_state, last.to_state) == (
        HistoryKind.MIGRATED,
        "awaiting_payment",
        "awaiting_confirmation",
    )
    assert last.step == "migrate v1 -> v2: upgrade"

    # an engine that knows only version 2 drives them to the end, with version 2's steps
    with Engine(small_store(db), sagas=[OrderV2]) as only_v2:
        done = only_v2.send("paid", instance_id=ids[0]).run
        assert (done.status, done.state, done.version) == (Status.COMPLETED, "done", 2)
        assert only_v2.get(ids[0], saga=OrderV2).data.shipped
    assert journal.calls.count("v2.ship") == 1
    assert "v1.release" not in journal.calls


def test_a_moved_run_compensates_its_old_steps_with_version_2s_compensations(
    engine: Engine,
) -> None:
    (run_id,) = waiting_runs(engine, 1)
    engine.migrate(OrderV2, from_version=1)

    cancelled = engine.cancel(run_id).run

    assert cancelled.status is Status.COMPENSATED
    assert journal.calls == ["v1.reserve", "v2.release"]


def test_the_wait_keeps_its_timer_across_the_move(engine: Engine) -> None:
    (run_id,) = waiting_runs(engine, 1)
    due_before = engine.store.get(run_id).due_at  # type: ignore[union-attr]

    engine.migrate(OrderV2, from_version=1)

    assert engine.store.get(run_id).due_at == due_before  # type: ignore[union-attr]


def test_a_dry_run_reports_what_would_move_and_writes_nothing(engine: Engine) -> None:
    ids = waiting_runs(engine, 2)
    before = engine.store.dump()

    report = engine.migrate("order", from_version=1, to_version=2, dry_run=True)

    assert report.dry_run
    assert sorted(e.instance_id for e in report.moved) == sorted(ids)
    assert {e.outcome for e in report.entries} == {"would move"}
    assert engine.store.dump() == before


def test_a_run_held_by_a_live_lease_is_skipped_and_left_on_its_version(
    engine: Engine, db: str
) -> None:
    waiting = waiting_runs(engine, 1)
    journal.hold = True
    held: dict[str, object] = {}

    def start_and_hold() -> None:
        with Engine(small_store(db), sagas=[OrderV1]) as other:
            held["run"] = other.start(OrderV1, Order("o-held"), key="order:o-held")

    thread = threading.Thread(target=start_and_hold)
    thread.start()
    try:
        assert journal.entered.wait(30), "the step never started"
        report = engine.migrate(OrderV2, from_version=1)
    finally:
        journal.gate.set()
        thread.join(30)

    assert [e.instance_id for e in report.moved] == waiting
    (skipped,) = report.skipped
    assert skipped.status == "running"
    assert "live lease" in (skipped.reason or "")
    run = held["run"]
    assert run.version == 1  # type: ignore[attr-defined]
    assert engine.get(run.id).version == 1  # type: ignore[attr-defined]


def test_a_context_function_that_fails_leaves_the_run_as_it_was(db: str) -> None:
    with Engine(small_store(db), sagas=[OrderV1, OrderV3]) as engine:
        (run_id,) = waiting_runs(engine, 1)
        before = engine.store.dump()

        report = engine.migrate(OrderV3, from_version=1)

        (failed,) = report.failed
        assert failed.instance_id == run_id
        assert failed.reason == "ValueError: no note for this order"
        assert engine.store.dump() == before
        run = engine.get(run_id, saga=OrderV1)
        assert (run.version, run.state, run.data) == (1, "awaiting_payment", Reserved(True))


def test_runs_that_may_not_move_are_skipped_with_the_reason(engine: Engine) -> None:
    ids = waiting_runs(engine, 2)
    engine.cancel(ids[1])  # compensated: it has ended, so it is not looked at

    report = engine.migrate(OrderV2, from_version=1)

    assert [e.instance_id for e in report.entries] == [ids[0]]
    assert engine.migrate(OrderV2, from_version=1).entries == ()  # nothing left on version 1


def test_a_version_that_declares_no_such_migration_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidOperation, match="declares no migration from version 2"):
        engine.migrate(OrderV2, from_version=2)
    with pytest.raises(InvalidOperation, match="add migrates_from"):
        engine.migrate(OrderV1, from_version=1)


def test_the_version_runs_move_onto_must_be_registered(db: str) -> None:
    with (
        Engine(small_store(db), sagas=[OrderV1]) as engine,
        pytest.raises(SagaNotRegistered, match="version 2 is not registered"),
    ):
        engine.migrate("order", from_version=1, to_version=2)


def test_the_async_engine_migrates_too(db: str) -> None:
    async def main() -> tuple[int, Status]:
        async with AsyncEngine(small_store(db), sagas=[OrderV1, OrderV2]) as engine:
            run = await engine.start(OrderV1, Order("o-a"))
            report = await engine.migrate(OrderV2, from_version=1)
            done = (await engine.send("paid", instance_id=run.id)).run
            return len(report.moved), done.status

    assert asyncio.run(main()) == (1, Status.COMPLETED)


def test_migrations_run_at_once_by_several_engines_move_each_run_once(db: str) -> None:
    with Engine(small_store(db), sagas=[OrderV1, OrderV2]) as first:
        ids = waiting_runs(first, 6)
    engines = [Engine(small_store(db), sagas=[OrderV1, OrderV2]) for _ in range(4)]
    gate = threading.Barrier(len(engines))
    reports = []

    def migrate(engine: Engine) -> None:
        gate.wait()
        reports.append(engine.migrate(OrderV2, from_version=1))

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(reports) == len(engines)  # contention is no error to any of them
        moved = sorted(e.instance_id for report in reports for e in report.moved)
        assert moved == sorted(ids)  # each run moved by exactly one engine
        for run_id in ids:
            run = engines[0].get(run_id, saga=OrderV2)
            assert (run.version, run.state) == (2, "awaiting_confirmation")
            kinds = [h.kind for h in run.history]
            assert kinds.count(HistoryKind.MIGRATED) == 1
    finally:
        for engine in engines:
            engine.close()
