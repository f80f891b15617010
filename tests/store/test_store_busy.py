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
from pathlib import Path

import pytest
from sagas import Order, Waiting

from statesaga import DeliveryStatus, Engine, Status, StoreError
from statesaga.store import SqlStore


def test_a_send_that_outwaits_the_busy_timeout_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with Engine(SqlStore(f"sqlite:///{path}", busy_timeout=0.1), sagas=[Waiting]) as engine:
        run = engine.start(Waiting, Order("c-1"))
        assert run.status is Status.WAITING
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreError) as raised:
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
