"""Transactional steps under the asyncio engine: many at once, none holding up the loop.

A transactional step holds a database connection (and, on SQLite, the file's
one write lock) from before the step runs until its transition commits.
``AsyncEngine`` runs that whole transaction on a worker thread, so more such
steps at once than there are pooled connections wait their turn there, and the
event loop goes on committing the runs that hold them.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import attrs
import pytest
import sqlalchemy as sa
from services import truncate

from statesaga import AsyncEngine, Saga, State, Status, StepContext
from statesaga.store import SqlStore

rows = sa.Table(
    "test_aio_rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(64)),
)


@attrs.define
class In:
    n: int


@attrs.define
class Data:
    written: int = 0


def write_slowly(ctx: StepContext[In, Data]) -> Data:
    """A sync step that writes a row and takes a while before its transaction commits."""
    assert ctx.connection is not None
    ctx.connection.execute(rows.insert().values(instance_id=ctx.instance_id))
    time.sleep(0.05)
    return Data(1)


async def write_and_await(ctx: StepContext[In, Data]) -> Data:
    """An async step that writes a row, then awaits before its transaction commits."""
    assert ctx.connection is not None
    ctx.connection.execute(rows.insert().values(instance_id=ctx.instance_id))
    await asyncio.sleep(0.05)
    return Data(1)


def unwrite(ctx: StepContext[In, Data]) -> None:
    """The writes' compensation: delete the run's row in the compensating transaction."""
    assert ctx.connection is not None
    ctx.connection.execute(rows.delete().where(rows.c.instance_id == ctx.instance_id))


def quick(ctx: StepContext[In, Data]) -> Data:
    return Data(ctx.data.written)


class SyncWrite(Saga[In, Data]):
    name = "aio_sync_write"
    new = State(initial=True)
    written = State()
    done = State(final=True)
    write = new.to(written).run(write_slowly, undo=unwrite, transactional=True)
    finish = written.to(done).run(quick, read_only=True)


class AsyncWrite(Saga[In, Data]):
    name = "aio_async_write"
    new = State(initial=True)
    done = State(final=True)
    write = new.to(done).run(write_and_await, undo=unwrite, transactional=True)


class Plain(Saga[In, Data]):
    name = "aio_plain"
    new = State(initial=True)
    done = State(final=True)
    step = new.to(done).run(quick, read_only=True)


def _store(db: str) -> SqlStore:
    """Two pooled connections on PostgreSQL (SQLite files write one at a time anyway)."""
    pooled = db.startswith("postgresql")
    store = SqlStore(db, pool_size=2, max_overflow=0) if pooled else SqlStore(db)
    rows.metadata.drop_all(store.engine)
    rows.metadata.create_all(store.engine)
    return store


def _count(store: SqlStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(rows)).scalar_one())


@pytest.mark.parametrize("saga", [SyncWrite, AsyncWrite], ids=["sync-step", "async-step"])
def test_more_transactional_steps_at_once_than_connections_all_commit(
    db: str, saga: type[Saga[In, Data]]
) -> None:
    store = _store(db)

    async def main() -> list[Status]:
        async with AsyncEngine(store, sagas=[saga, Plain]) as engine:
            started = [engine.start(saga, In(i)) for i in range(20)]
            plain = [engine.start(Plain, In(i)) for i in range(20)]
            runs = await asyncio.wait_for(asyncio.gather(*started, *plain), timeout=60)
            return [run.status for run in runs]

    try:
        statuses = asyncio.run(main())
        assert statuses == [Status.COMPLETED] * 40
        assert _count(store) == 20  # each step's row, committed with its transition
    finally:
        rows.metadata.drop_all(store.engine)
        store.close()


def test_the_loop_keeps_running_while_transactional_steps_wait_for_a_connection(
    postgres_url: str,
) -> None:
    """On PostgreSQL; on SQLite the loop's own writes wait while a step holds the file."""
    truncate(postgres_url)
    store = _store(postgres_url)
    ticks: list[float] = []

    async def heartbeat(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> None:
        stop = asyncio.Event()
        beating = asyncio.create_task(heartbeat(stop))
        async with AsyncEngine(store, sagas=[SyncWrite]) as engine:
            await asyncio.wait_for(
                asyncio.gather(*(engine.start(SyncWrite, In(i)) for i in range(12))), timeout=60
            )
        stop.set()
        await beating

    try:
        asyncio.run(main())
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        # twelve 50 ms steps, two at a time (0.3 s in all): the loop is not held
        # while the steps queue for the two connections
        assert len(ticks) > 10
        assert max(gaps) < 0.25, max(gaps)
        assert _count(store) == 12
    finally:
        rows.metadata.drop_all(store.engine)
        store.close()


def test_a_cancelled_start_rolls_its_step_back(db: str) -> None:
    store = _store(db)

    async def main() -> None:
        async with AsyncEngine(store, sagas=[SyncWrite]) as engine:
            task = asyncio.create_task(engine.start(SyncWrite, In(1)))
            await asyncio.sleep(0.02)  # the step is writing, its transaction open
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)  # the step's thread returns and rolls back

    try:
        asyncio.run(main())
        assert _count(store) == 0
    finally:
        rows.metadata.drop_all(store.engine)
        store.close()
