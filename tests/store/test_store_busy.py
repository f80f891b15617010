"""SQLite: a write that waits past the busy timeout is a clear StoreError, and writes nothing.

Another process holding SQLite's write lock longer than the store's
``busy_timeout`` is the store being busy, not a race on the run: the sender is
told plainly (a ``StoreError`` naming the timeout and what to do) instead of
getting SQLAlchemy's ``OperationalError``, nothing is recorded, and sending the
same event again once the lock is free records it. Opening a store only reads
its schema's revision, so it never waits for that other writer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import attrs
import pytest
from sagas import Order, Progress, Waiting

from statesaga import (
    DeliveryStatus,
    Engine,
    HistoryKind,
    Saga,
    State,
    Status,
    StepContext,
    StoreBusy,
    StoreError,
)
from statesaga.store import SqlStore


def test_a_send_that_outwaits_the_busy_timeout_is_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with Engine(SqlStore(f"sqlite:///{path}", busy_timeout=0.1), sagas=[Waiting]) as engine:
        run = engine.start(Waiting, Order("c-1"))
        assert run.status is Status.WAITING
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreBusy) as raised:  # a StoreError: safe to send again
                engine.send("confirmed", {"code": "x"}, instance_id=run.id, event_id="ev-1")
            assert "busy_timeout" in str(raised.value)
            assert "send it again" in str(raised.value)
            assert raised.value.instance_id == run.id
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert engine.get(run.id).inbox == ()  # nothing was recorded
        delivery = engine.send("confirmed", {"code": "x"}, instance_id=run.id, event_id="ev-1")
        assert delivery.status is DeliveryStatus.ACCEPTED
        assert not delivery.duplicate


def test_a_store_opens_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    SqlStore(f"sqlite:///{path}").close()  # the schema is there
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with Engine(SqlStore(f"sqlite:///{path}", busy_timeout=0.1), sagas=[Waiting]) as engine:
            assert engine.list() == []  # opened and read without waiting for the writer
        other.execute("ROLLBACK")
    finally:
        other.close()


class OtherProcess:
    """Another process's connection that takes SQLite's write lock while a step runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = threading.Event()
        self.release = threading.Event()

    def hold_while_the_step_runs(self, ctx: StepContext[Ticket, Progress]) -> Progress:
        if not self.held.is_set():
            threading.Thread(target=self._hold, daemon=True).start()
            self.held.wait(5)
        return Progress(done=[*ctx.data.done, "issued"])

    def _hold(self) -> None:
        other = sqlite3.connect(self.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        self.held.set()
        self.release.wait(10)
        other.execute("ROLLBACK")
        other.close()


@attrs.frozen
class Ticket:
    ticket_id: str


def test_a_transition_that_outwaits_the_busy_timeout_is_store_busy_and_resumes_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    other = OtherProcess(path)

    class Issue(Saga[Ticket, Progress]):
        name = "issue-busy"
        new = State(initial=True)
        issued = State(final=True)
        issue = new.to(issued).run(other.hold_while_the_step_runs, read_only=True)

    store = SqlStore(f"sqlite:///{path}", busy_timeout=0.1)
    with Engine(store, sagas=[Issue], lease_ttl=0.3) as engine:
        with pytest.raises(StoreBusy, match="stayed locked by another writer") as raised:
            engine.start(Issue, Ticket("t-1"))
        assert isinstance(raised.value, StoreError)  # callers catching StoreError see it too
        (run,) = engine.list(saga="issue-busy")
        assert run.status is Status.RUNNING  # its start is there, its step's write is not
        assert [h.kind for h in engine.get(run.id).history] == [HistoryKind.START]
        other.release.set()
        time.sleep(0.4)  # past the run's lease: a worker's pass takes it over
        (done,) = engine.recover()
        assert done.id == run.id
        assert done.status is Status.COMPLETED


def test_a_recovery_pass_that_outwaits_the_busy_timeout_is_store_busy_and_takes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    other = OtherProcess(path)

    class Issue(Saga[Ticket, Progress]):
        name = "issue-busy-claim"
        new = State(initial=True)
        issued = State(final=True)
        issue = new.to(issued).run(other.hold_while_the_step_runs, read_only=True)

    store = SqlStore(f"sqlite:///{path}", busy_timeout=0.1)
    with Engine(store, sagas=[Issue], lease_ttl=0.3) as engine:
        with pytest.raises(StoreBusy):
            engine.start(Issue, Ticket("t-1"))
        (run,) = engine.list(saga="issue-busy-claim")
        time.sleep(0.4)  # past the run's lease, the other process still writing
        # the claim is written through SQLAlchemy, not the hot path: the same clear error
        with pytest.raises(StoreBusy, match="busy_timeout") as raised:
            engine.recover()
        assert not isinstance(raised.value.__cause__, StoreBusy)  # the database's own error
        assert engine.get(run.id).history[-1].kind is HistoryKind.START  # nothing taken
        other.release.set()
        time.sleep(0.1)
        (done,) = engine.recover()
        assert done.status is Status.COMPLETED


def test_a_transaction_for_a_step_that_outwaits_the_busy_timeout_is_store_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    store = SqlStore(f"sqlite:///{path}", busy_timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreBusy, match="busy_timeout"), store.transaction():
            pytest.fail("the transaction began although another process held the lock")
        # the application's own writes on the store's engine get the same error
        with pytest.raises(StoreBusy), store.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM statesaga_instances")
        other.execute("ROLLBACK")
    finally:
        other.close()
    with store.transaction() as connection:  # free again: it begins at once
        assert connection.exec_driver_sql("SELECT count(*) FROM statesaga_instances").scalar() == 0
    store.close()
