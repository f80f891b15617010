"""SQLite: a process's writers queue for the write lock instead of sleeping in SQLite.

Every write transaction a store opens on a SQLite file (the engine's own and a
transactional step's) first takes that file's in-process lock, shared by every
store on the file, and gives it back the moment it commits or rolls back. Many
threads writing at once all finish; a writer that waits past ``busy_timeout``
gets the same clear busy error as before, with nothing written; and a
transaction that fails, or whose connection is thrown away, never keeps the lock.
Writers get the lock in the order they asked for it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa

from statesaga import Engine, NonRetryableError, Saga, State, Status, StepContext, StoreError
from statesaga.store import SqlStore
from statesaga.store.sqlite_writers import writers_for

stock = sa.Table(
    "writers_stock",
    sa.MetaData(),
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("step", sa.String, nullable=False),
)


@attrs.frozen
class Basket:
    basket_id: str
    fail: bool = False


@attrs.frozen
class Booked:
    rows: int = 0


class Refused(NonRetryableError):
    pass


def reserve(ctx: StepContext[Basket, Booked]) -> Booked:
    """Writes a row in the transition's own transaction (or fails, writing nothing)."""
    ctx.connection.execute(stock.insert().values(run_id=ctx.instance_id, step="reserve"))
    if ctx.input.fail:
        raise Refused("no stock")
    return Booked(ctx.data.rows + 1)


def release(ctx: StepContext[Basket, Booked]) -> None:
    """Its compensation, in the compensating transition's transaction."""
    ctx.connection.execute(stock.delete().where(stock.c.run_id == ctx.instance_id))


def confirm(ctx: StepContext[Basket, Booked]) -> Booked:
    return Booked(ctx.data.rows + 1)


class Checkout(Saga[Basket, Booked]):
    name = "writers-checkout"
    new = State(initial=True)
    reserved = State()
    done = State(final=True)

    take = new.to(reserved).run(reserve, undo=release, transactional=True)
    confirm = reserved.to(done).run(confirm, read_only=True)


def store_at(path: Path, busy_timeout: float = 10.0) -> SqlStore:
    store = SqlStore(f"sqlite:///{path}", busy_timeout=busy_timeout)
    stock.create(store.engine, checkfirst=True)
    return store


def test_many_threads_writing_one_file_all_finish(tmp_path: Path) -> None:
    threads, per_thread = 24, 8
    errors: list[BaseException] = []
    with Engine(store_at(tmp_path / "shop.db"), sagas=[Checkout]) as engine:

        def customer(n: int) -> None:
            try:
                for i in range(per_thread):
                    run = engine.start(Checkout, Basket(f"b-{n}-{i}"))
                    assert run.status is Status.COMPLETED, run
            except BaseException as error:  # reported below, with the others
                errors.append(error)

        workers = [threading.Thread(target=customer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        runs = engine.list(saga=Checkout.name, limit=1000)
        assert len(runs) == threads * per_thread
        assert {run.status for run in runs} == {Status.COMPLETED}
        with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
            rows = connection.execute(sa.select(sa.func.count()).select_from(stock)).scalar()
        assert rows == threads * per_thread  # each reservation written exactly once


def test_a_writer_queued_past_busy_timeout_fails_clearly_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    holder = store_at(path)
    with Engine(store_at(path, busy_timeout=0.2), sagas=[Checkout]) as engine:
        with holder.transaction() as connection:  # another store of this process is writing
            connection.execute(stock.insert().values(run_id="held", step="held"))
            with pytest.raises(StoreError) as raised:
                engine.start(Checkout, Basket("b-1"))
        assert "busy_timeout" in str(raised.value)
        assert "another writer of this process" in str(raised.value)
        assert engine.list(saga=Checkout.name) == []  # nothing of the refused start
        run = engine.start(Checkout, Basket("b-1"))  # the lock was given back at commit
        assert run.status is Status.COMPLETED
    holder.close()


def test_a_failed_step_transaction_gives_the_lock_back(tmp_path: Path) -> None:
    with Engine(store_at(tmp_path / "shop.db", busy_timeout=0.5), sagas=[Checkout]) as engine:
        failed = engine.start(Checkout, Basket("b-1", fail=True))
        assert failed.status is Status.COMPENSATED
        # the step's transaction rolled back (its row with it), and the lock with it
        with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
            assert connection.execute(sa.select(stock)).all() == []
        assert engine.start(Checkout, Basket("b-2")).status is Status.COMPLETED


class Killed(BaseException):
    """What a process being killed looks like to the code it was running."""


def test_a_transaction_whose_connection_is_thrown_away_gives_the_lock_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    store = store_at(path, busy_timeout=0.5)

    def killed_mid_transaction() -> None:
        with store.transaction() as connection:
            connection.execute(stock.insert().values(run_id="lost", step="lost"))
            raise Killed

    with pytest.raises(Killed):
        killed_mid_transaction()
    with store.transaction() as connection:  # waits 0.5 s at most: the lock is free
        connection.execute(stock.insert().values(run_id="next", step="next"))
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(stock.c.run_id)).scalars().all() == ["next"]
    store.close()


def test_writers_get_the_lock_in_the_order_they_asked(tmp_path: Path) -> None:
    writers = writers_for(str(tmp_path / "queue.db"))
    writers.acquire(owner=0, timeout=5.0)
    order: list[int] = []

    def writer(owner: int) -> None:
        writers.acquire(owner=owner, timeout=5.0)
        order.append(owner)
        writers.release(owner=owner)

    threads = []
    for owner in range(1, 9):
        thread = threading.Thread(target=writer, args=(owner,))
        thread.start()
        threads.append(thread)
        wait_until(lambda owner=owner: writers.waiting == owner)  # queued behind the others
    writers.release(owner=0)
    for thread in threads:
        thread.join()
    assert order == list(range(1, 9))
    assert writers.holder is None


def test_a_writer_that_gives_up_leaves_the_queue(tmp_path: Path) -> None:
    writers = writers_for(str(tmp_path / "queue.db"))
    writers.acquire(owner=1, timeout=5.0)
    with pytest.raises(sqlite3.OperationalError, match="busy_timeout") as raised:
        writers.acquire(owner=2, timeout=0.05)
    assert raised.value.sqlite_errorcode == 5  # SQLITE_BUSY, as SQLite would report it
    assert writers.waiting == 0
    writers.release(owner=1)
    assert writers.holder is None
    writers.acquire(owner=3, timeout=0.05)  # free again: taken at once
    writers.release(owner=3)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)
