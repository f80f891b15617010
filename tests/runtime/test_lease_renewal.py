"""Renewing many leases at once: each lock backend's ``renew_many``, and the keeper's rounds.

``renew_many`` renews every lease still held by its token, in one batch, and
answers ``None`` for one that was lost, in the order given: the same
compare-and-extend as ``renew``, for the lease keeper's rounds.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from services import truncate

from statesaga import Engine, Saga, State, Status, StepContext
from statesaga.aio import AsyncEngine
from statesaga.locks import InProcessLocks, Lease, SqlLocks
from statesaga.runtime.locking import AsyncLockPort
from statesaga.store import SqlStore


@pytest.fixture(params=["in-process", "sql-sqlite", "sql-postgres", "redis"])
def locks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "in-process":
        yield InProcessLocks()
    elif request.param.startswith("sql"):
        url = (
            f"sqlite:///{tmp_path / 'locks.db'}"
            if request.param == "sql-sqlite"
            else request.getfixturevalue("postgres_url")
        )
        store = SqlStore(url, pool_size=1, max_overflow=1, hot_connections=1)
        yield SqlLocks(store)
        store.close()
    else:
        from statesaga.locks import RedisLocks

        space = f"statesaga-test:{uuid.uuid4().hex}:"
        redis_locks = RedisLocks(request.getfixturevalue("redis_url"), namespace=space)
        yield redis_locks
        for name in redis_locks.client.scan_iter(match=f"{space}*"):
            redis_locks.client.delete(name)
        redis_locks.close()


def test_renew_many_extends_the_leases_still_held_and_answers_none_for_the_lost(
    locks: Any,
) -> None:
    now = time.time()
    held = [locks.try_acquire(f"cart:{n}", "me", 30, now) for n in range(3)]
    assert all(lease is not None for lease in held)
    stale = Lease("cart:1", "me", "not-the-token", now + 30)  # as a holder that lost it
    gone = Lease("cart:9", "me", uuid.uuid4().hex, now + 30)  # never taken, or expired
    later = now + 10
    renewed = locks.renew_many([held[0], stale, held[2], gone, held[1]], 30, later)
    assert renewed == [
        Lease("cart:0", "me", held[0].token, later + 30),
        None,
        Lease("cart:2", "me", held[2].token, later + 30),
        None,
        Lease("cart:1", "me", held[1].token, later + 30),
    ]
    assert locks.renew_many([], 30, later) == []
    # still the same holder's: nobody else gets in
    assert locks.try_acquire("cart:1", "you", 30, later + 1) is None


def test_renew_many_batches_past_one_script_call_on_redis(redis_url: str) -> None:
    from statesaga.locks import RedisLocks
    from statesaga.locks.redis import RENEW_MANY_KEYS

    space = f"statesaga-test:{uuid.uuid4().hex}:"
    locks = RedisLocks(redis_url, namespace=space)
    try:
        now = time.time()
        leases = [locks.try_acquire(f"k:{n}", "me", 1, now) for n in range(RENEW_MANY_KEYS + 5)]
        assert all(leases)
        renewed = locks.renew_many([lease for lease in leases if lease], 60, now)
        assert all(lease is not None for lease in renewed)
        # Redis keeps the new expiry: about a minute, not the second they were taken for
        assert locks.client.pttl(f"{space}k:{RENEW_MANY_KEYS + 4}") > 50_000
    finally:
        for name in locks.client.scan_iter(match=f"{space}*"):
            locks.client.delete(name)
        locks.close()


def test_async_redis_locks_renew_many(redis_url: str) -> None:
    from statesaga.locks import AsyncRedisLocks

    space = f"statesaga-test:{uuid.uuid4().hex}:"

    async def scenario() -> None:
        locks = AsyncRedisLocks(redis_url, namespace=space)
        try:
            now = time.time()
            one = await locks.try_acquire("cart:1", "me", 30, now)
            two = await locks.try_acquire("cart:2", "me", 30, now)
            assert one is not None
            assert two is not None
            await locks.release(two)
            renewed = await locks.renew_many([one, two], 30, now + 5)
            assert renewed == [Lease("cart:1", "me", one.token, now + 35), None]
        finally:
            async for name in locks.client.scan_iter(match=f"{space}*"):
                await locks.client.delete(name)
            await locks.aclose()

    asyncio.run(scenario())


def _no_coroutine_left_unawaited(recorded: list[warnings.WarningMessage]) -> None:
    gc.collect()  # an unawaited coroutine warns when it is collected
    unawaited = [str(w.message) for w in recorded if "never awaited" in str(w.message)]
    assert unawaited == []


def test_a_renewal_handed_to_a_closed_loop_is_an_error_and_leaves_no_coroutine(
    redis_url: str,
) -> None:
    """The keeper's thread can run a round while the engine's loop has already closed."""
    from statesaga.locks import AsyncRedisLocks

    port = AsyncLockPort(AsyncRedisLocks(redis_url), "me", 30, time.time)
    port._loop = asyncio.new_event_loop()
    port._loop.close()
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError):
            port.renew_many([Lease("cart:1", "me", "token", time.time() + 30)], time.time())
        _no_coroutine_left_unawaited(recorded)


def test_a_renewal_the_loop_ends_without_running_is_an_error_and_leaves_no_coroutine(
    redis_url: str,
) -> None:
    """As ``asyncio.run`` does on its way out: the loop stops, then cancels what is left."""
    from statesaga.locks import AsyncRedisLocks

    port = AsyncLockPort(AsyncRedisLocks(redis_url), "me", 30, time.time)
    loop = port._loop = asyncio.new_event_loop()
    busy, raised = threading.Event(), []

    def keeper() -> None:
        try:
            port.renew_many([Lease("cart:1", "me", "token", time.time() + 30)], time.time())
        except RuntimeError as error:
            raised.append(error)

    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        loop.call_soon(busy.wait)  # the loop is busy while the keeper hands its batch over
        thread = threading.Thread(target=keeper)
        thread.start()
        time.sleep(0.2)
        loop.call_soon_threadsafe(loop.stop)  # the engine's work is done
        busy.set()
        loop.run_forever()  # the batch's task is made, then the loop stops before it runs
        left = asyncio.all_tasks(loop)
        assert left, "the batch was handed over before the loop stopped"
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()
        thread.join(5)
        assert [str(error) for error in raised] == ["the event loop ended before the renewal ran"]
        _no_coroutine_left_unawaited(recorded)


# -- the keeper -----------------------------------------------------------------------------------


@attrs.frozen
class Ticket:
    number: int


@attrs.define
class Nothing:
    pass


class Gate:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.inside = 0


async def park(ctx: StepContext[Ticket, Nothing]) -> None:
    gate = ctx.resource(Gate)
    gate.inside += 1
    await gate.event.wait()


class Parked(Saga[Ticket, Nothing]):
    name = "renewal-parked"
    new = State(initial=True)
    done = State(final=True)
    work = new.to(done).run(park, read_only=True)


class Counting:
    """``InProcessLocks`` that count their calls: one ``renew_many`` per round, no ``renew``."""

    def __init__(self) -> None:
        self.inner = InProcessLocks()
        self.renew_calls = 0
        self.batches: list[int] = []

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        return self.inner.try_acquire(key, owner, ttl, now)

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        self.renew_calls += 1
        return self.inner.renew(lease, ttl, now)

    def renew_many(self, leases: list[Lease], ttl: float, now: float) -> list[Lease | None]:
        self.batches.append(len(leases))
        return self.inner.renew_many(leases, ttl, now)

    def release(self, lease: Lease) -> None:
        self.inner.release(lease)


def test_the_keeper_renews_every_held_run_and_its_lock_in_one_batch_per_round(db: str) -> None:
    locks = Counting()
    runs = 30

    async def scenario() -> None:
        gate = Gate()
        async with AsyncEngine(
            db, sagas=[Parked], resources=[gate], locks=locks, lease_ttl=0.6
        ) as engine:
            tasks = [
                asyncio.create_task(engine.start(Parked, Ticket(n), key=f"ticket:{n}"))
                for n in range(runs)
            ]
            while gate.inside < runs:
                await asyncio.sleep(0.01)
            keeper = engine.runtime.keeper
            began = keeper.stats().rounds
            while keeper.stats().rounds < began + 3:
                await asyncio.sleep(0.05)
            stats = keeper.stats()
            assert (stats.held, stats.in_flight, stats.lost) == (runs, runs, 0)
            # one batch of locks per round, never one call per lock
            assert (len(locks.batches), sum(locks.batches)) == (stats.rounds, stats.renewed)
            assert locks.renew_calls == 0
            gate.event.set()
            assert {(await task).status for task in tasks} == {Status.COMPLETED}

    asyncio.run(scenario())


@attrs.define
class Slow:
    n: int


@attrs.define
class Held:
    done: bool = False


def hold_a_connection(ctx: StepContext[Slow, Held]) -> Held:
    """A transactional step that keeps its pooled connection for longer than the lease lasts."""
    assert ctx.connection is not None
    ctx.connection.exec_driver_sql("SELECT 1")
    time.sleep(1.2)
    return Held(True)


def give_back(ctx: StepContext[Slow, Held]) -> None:
    pass


class LongTransaction(Saga[Slow, Held]):
    name = "long_transaction"
    new = State(initial=True)
    done = State(final=True)
    work = new.to(done).run(hold_a_connection, undo=give_back, transactional=True)


def test_leases_are_renewed_while_transactional_steps_hold_every_pooled_connection(
    postgres_url: str,
) -> None:
    """Six runs, two pooled connections, a 0.9 s lease: the four runs waiting for a
    connection, and the two holding one, keep their leases all along (the keeper
    renews through the hot path's connections, not the pool the steps hold)."""
    truncate(postgres_url)
    store = SqlStore(postgres_url, pool_size=2, max_overflow=0, hot_connections=2)
    engine = Engine(store, sagas=[LongTransaction], lease_ttl=0.9)
    watcher = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    lapsed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        query = (
            "SELECT count(*) FROM statesaga_instances WHERE status = 'running' "
            "AND lease_expires_at < extract(epoch FROM clock_timestamp())"
        )
        while not stop.is_set():
            with watcher.connect() as connection:
                lapsed.append(int(connection.exec_driver_sql(query).scalar_one()))
            time.sleep(0.05)

    looking = threading.Thread(target=watch)
    looking.start()
    runs: list[Any] = []
    starts = [
        threading.Thread(target=lambda i=i: runs.append(engine.start(LongTransaction, Slow(i))))
        for i in range(6)
    ]
    try:
        for thread in starts:
            thread.start()
        for thread in starts:
            thread.join()
    finally:
        stop.set()
        looking.join()
        engine.close()
        watcher.dispose()
        truncate(postgres_url)
    assert [run.status for run in runs] == [Status.COMPLETED] * 6
    assert len(lapsed) > 20  # the watcher looked all along (about 3.6 s)
    assert max(lapsed) == 0
