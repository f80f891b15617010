"""Entity locks: every implementation keeps others out, renews, lapses and releases alike.

Each backend is driven through the same ``Locks`` protocol by two handles that
stand for two processes: two ``SqlStore`` on one SQLite file, two Redis clients,
two PostgreSQL connection sets. Redis tests keep to a key namespace of their own,
so concurrent runs on one server do not collide.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import pytest
import sqlalchemy as sa
from sagas import Linear, Order, Receipt, journal

from statesaga import Engine, EntityBusy, LocksUnavailable, StateSagaError, Status
from statesaga.locks import AdvisoryLocks, InProcessLocks, Lease, Locks, SqlLocks
from statesaga.store import SqlStore
from statesaga.testing import FakeClock

UNREACHABLE = "redis://127.0.0.1:1"


def namespace() -> str:
    return f"statesaga-test:{uuid.uuid4().hex}:"


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


@attrs.define
class Backend:
    """Two handles on one lock space, and the means to let time pass on it."""

    one: Locks
    two: Locks
    ttl: float
    now: Callable[[], float]
    wait: Callable[[float], None]
    lapse: Callable[[Lease], None]  # end a held lease as a crashed holder's would end


def _fake_time(
    one: Locks, two: Locks, lapse: Callable[[Lease], None] | None = None, ttl: float = 10.0
) -> Backend:
    """Time that moves when a test says so; by default a lease lapses when its ttl passes."""
    clock = FakeClock(1_000.0)
    lapse = lapse or (lambda _lease: clock.advance(ttl + 1))
    return Backend(one, two, ttl, clock, clock.advance, lapse)


@pytest.fixture(params=["in-process", "sql", "redis", "advisory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "in-process":
        shared = InProcessLocks()
        yield _fake_time(shared, shared)
    elif request.param == "sql":
        stores = [SqlStore(f"sqlite:///{tmp_path / 'locks.db'}") for _ in range(2)]
        yield _fake_time(SqlLocks(stores[0]), SqlLocks(stores[1]))
        for store in stores:
            store.close()
    elif request.param == "redis":
        yield from _redis_backend(request.getfixturevalue("redis_url"))
    else:
        yield from _advisory_backend(request.getfixturevalue("postgres_url"))


def _redis_backend(url: str) -> Iterator[Backend]:
    from statesaga.locks import RedisLocks

    space = namespace()
    one, two = RedisLocks(url, namespace=space), RedisLocks(url, namespace=space)
    ttl = 0.3  # real time: Redis expires the key itself

    def lapse(_lease: Lease) -> None:
        time.sleep(ttl + 0.15)

    yield Backend(one, two, ttl, time.time, time.sleep, lapse)
    _forget_namespace(one.client, space)
    one.close()
    two.close()


def _forget_namespace(client: Any, space: str) -> None:
    for name in client.scan_iter(match=f"{space}*"):
        client.delete(name)


def _advisory_backend(url: str) -> Iterator[Backend]:
    space = namespace()
    stores = [SqlStore(url) for _ in range(2)]
    one, two = (AdvisoryLocks(store, namespace=space) for store in stores)
    admin = sa.create_engine(url)

    def lapse(lease: Lease) -> None:
        # the holder's session dies, as a crashed process's would: its lock goes with it
        with admin.begin() as connection:
            ended = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                    "AND ((classid::bigint << 32) | objid::bigint) = :lock_id"
                ),
                {"lock_id": one.lock_id(lease.key)},
            ).all()
        assert ended == [(True,)]

    yield _fake_time(one, two, lapse)  # advisory locks ignore time: only a dead session lapses
    one.close()
    two.close()
    admin.dispose()
    for store in stores:
        store.close()


# -- the protocol, on every backend ---------------------------------------------------------------


def test_a_held_key_keeps_everyone_else_out(backend: Backend) -> None:
    now = backend.now()
    lease = backend.one.try_acquire("cart:1", "a", backend.ttl, now)
    assert lease is not None
    assert (lease.key, lease.owner, lease.expires_at) == ("cart:1", "a", now + backend.ttl)
    assert backend.two.try_acquire("cart:1", "b", backend.ttl, backend.now()) is None
    assert backend.one.try_acquire("cart:1", "c", backend.ttl, backend.now()) is None
    other = backend.two.try_acquire("cart:2", "b", backend.ttl, backend.now())
    assert other is not None  # another entity is free
    assert other.token != lease.token


def test_renewal_keeps_a_lease_past_its_first_ttl(backend: Backend) -> None:
    lease = backend.one.try_acquire("cart:1", "a", backend.ttl, backend.now())
    assert lease is not None
    backend.wait(backend.ttl * 0.6)
    now = backend.now()
    renewed = backend.one.renew(lease, backend.ttl, now)
    assert renewed is not None
    assert (renewed.token, renewed.expires_at) == (lease.token, now + backend.ttl)
    backend.wait(backend.ttl * 0.6)  # past the first ttl, within the renewed one
    assert backend.two.try_acquire("cart:1", "b", backend.ttl, backend.now()) is None


def test_a_lapsed_lease_is_taken_over_and_its_old_holder_cannot_touch_the_new_one(
    backend: Backend,
) -> None:
    lease = backend.one.try_acquire("cart:1", "a", backend.ttl, backend.now())
    assert lease is not None
    backend.lapse(lease)
    taken = backend.two.try_acquire("cart:1", "b", backend.ttl, backend.now())
    assert taken is not None
    assert taken.owner == "b"
    assert backend.one.renew(lease, backend.ttl, backend.now()) is None  # the old holder lost it
    backend.one.release(lease)  # releasing a lost lease does not free the new holder's
    assert backend.one.try_acquire("cart:1", "c", backend.ttl, backend.now()) is None
    assert backend.two.renew(taken, backend.ttl, backend.now()) is not None
    backend.two.release(taken)
    assert backend.one.try_acquire("cart:1", "a", backend.ttl, backend.now()) is not None


def test_release_frees_the_key_and_a_released_lease_is_dead(backend: Backend) -> None:
    lease = backend.one.try_acquire("cart:1", "a", backend.ttl, backend.now())
    assert lease is not None
    backend.one.release(lease)
    backend.one.release(lease)  # twice is harmless
    assert backend.one.renew(lease, backend.ttl, backend.now()) is None
    again = backend.two.try_acquire("cart:1", "b", backend.ttl, backend.now())
    assert again is not None
    backend.one.release(lease)  # the stale lease still cannot free the new holder's
    assert backend.one.try_acquire("cart:1", "c", backend.ttl, backend.now()) is None


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_keys_are_namespaced_and_expire_in_redis(redis_url: str) -> None:
    import redis

    from statesaga.locks import RedisLocks

    space, elsewhere = namespace(), namespace()
    raw = redis.Redis.from_url(redis_url)
    locks, other = (
        RedisLocks(redis_url, namespace=space),
        RedisLocks(redis_url, namespace=elsewhere),
    )
    try:
        assert locks.key_for("cart:1") == f"{space}cart:1"
        lease = locks.try_acquire("cart:1", "a", ttl=5, now=0.0)
        assert lease is not None
        assert raw.get(f"{space}cart:1") == lease.token.encode()
        assert 4000 < raw.pttl(f"{space}cart:1") <= 5000
        assert raw.exists("cart:1") == 0  # nothing outside the namespace
        assert locks.renew(lease, ttl=60, now=1.0) is not None
        assert 59000 < raw.pttl(f"{space}cart:1") <= 60000
        elsewhere_lease = other.try_acquire("cart:1", "b", ttl=5, now=0.0)
        assert elsewhere_lease is not None  # another namespace is another lock space
        locks.release(lease)
        assert raw.exists(f"{space}cart:1") == 0
        assert raw.exists(f"{elsewhere}cart:1") == 1
    finally:
        _forget_namespace(raw, space)
        _forget_namespace(raw, elsewhere)
        locks.close()
        other.close()
        raw.close()


def test_redis_locks_take_a_client_as_configured(redis_url: str) -> None:
    import redis

    from statesaga.locks import RedisLocks

    space = namespace()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    locks = RedisLocks(client, namespace=space)
    try:
        lease = locks.try_acquire("cart:1", "a", ttl=5, now=0.0)
        assert lease is not None
        assert client.get(f"{space}cart:1") == lease.token
        assert locks.renew(lease, ttl=5, now=1.0) is not None
        locks.release(lease)
        locks.close()  # a client it was given stays open
        assert client.exists(f"{space}cart:1") == 0
    finally:
        _forget_namespace(client, space)
        client.close()


def test_an_unreachable_redis_raises_locks_unavailable_within_seconds() -> None:
    from statesaga.locks import RedisLocks

    locks = RedisLocks(UNREACHABLE)  # connecting is lazy: constructing never fails
    started = time.monotonic()
    with pytest.raises(
        LocksUnavailable, match=re.escape("Redis at redis://127.0.0.1:1 is unavailable")
    ):
        locks.try_acquire("cart:1", "a", ttl=5, now=0.0)
    with pytest.raises(LocksUnavailable, match="check that Redis runs there") as caught:
        locks.renew(Lease("cart:1", "a", "token", 5.0), ttl=5, now=1.0)
    assert time.monotonic() - started < 2.5
    assert caught.value.key == "cart:1"
    locks.release(Lease("cart:1", "a", "token", 5.0))  # logged, never raised: the key expires
    locks.close()


def test_a_redis_that_never_answers_raises_locks_unavailable_within_its_timeout() -> None:
    from statesaga.locks import RedisLocks

    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        locks = RedisLocks(f"redis://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(LocksUnavailable, match="Timeout"):
            locks.try_acquire("cart:1", "a", ttl=5, now=0.0)
        assert time.monotonic() - started < 2.5
        locks.close()


def test_a_password_in_the_url_stays_out_of_the_error() -> None:
    from statesaga.locks import RedisLocks

    locks = RedisLocks("redis://shop:s3cret@127.0.0.1:1/2")
    with pytest.raises(LocksUnavailable) as caught:
        locks.try_acquire("cart:1", "a", ttl=5, now=0.0)
    assert "s3cret" not in str(caught.value)
    assert "redis://shop:***@127.0.0.1:1/2" in str(caught.value)
    locks.close()


def test_an_engine_on_an_unreachable_redis_fails_to_start_and_writes_nothing(
    tmp_path: Path,
) -> None:
    from statesaga.locks import RedisLocks

    locks = RedisLocks(UNREACHABLE)
    with Engine(f"sqlite:///{tmp_path / 'sagas.db'}", locks=locks) as engine:
        before = engine.store.dump()
        started = time.monotonic()
        with pytest.raises(LocksUnavailable, match=re.escape(UNREACHABLE)):
            engine.start(Linear, Order("o-1"), key="order:o-1")
        assert time.monotonic() - started < 2.5
        assert engine.store.dump() == before
    assert journal.calls == []
    locks.close()


def test_an_engine_with_redis_locks_completes_a_run_and_turns_a_concurrent_start_away(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    from statesaga.locks import RedisLocks

    space = namespace()
    raw = redis.Redis.from_url(redis_url)
    locks, other_locks = (
        RedisLocks(redis_url, namespace=space),
        RedisLocks(redis_url, namespace=space),
    )
    database = f"sqlite:///{tmp_path / 'sagas.db'}"
    inside, go_on = threading.Event(), threading.Event()
    held: list[bytes | None] = []

    def hold(_ctx: object) -> None:
        held.append(raw.get(f"{space}order:o-1"))  # the lease, in Redis, while the step runs
        inside.set()
        go_on.wait(5)

    journal.hooks["reserve"] = hold
    runs = []
    try:
        with Engine(database, locks=locks) as engine, Engine(database, locks=other_locks) as other:
            worker = threading.Thread(
                target=lambda: runs.append(engine.start(Linear, Order("o-1"), key="order:o-1"))
            )
            worker.start()
            assert inside.wait(5)
            before = other.store.dump()
            started = time.monotonic()
            with pytest.raises(EntityBusy, match="order:o-1 is busy: another run holds it"):
                other.start(Linear, Order("o-1"), key="order:o-1")
            assert time.monotonic() - started < 1
            assert other.store.dump() == before
            go_on.set()
            worker.join(5)
        (run,) = runs
        assert (run.status, run.output) == (Status.COMPLETED, Receipt("o-1", 3))
        assert journal.names() == ["reserve", "charge", "ship"]
        assert held[0] is not None
        assert raw.exists(f"{space}order:o-1") == 0  # released when the run completed
    finally:
        go_on.set()
        _forget_namespace(raw, space)
        locks.close()
        other_locks.close()
        raw.close()


def test_an_engine_renews_its_redis_lease_while_a_step_outlives_it(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    from statesaga.locks import RedisLocks

    space = namespace()
    raw = redis.Redis.from_url(redis_url)
    locks, rival = RedisLocks(redis_url, namespace=space), RedisLocks(redis_url, namespace=space)
    turned_away: list[bool] = []

    def slow(_ctx: object) -> None:
        for _ in range(5):  # 1 s in all, more than three times the 0.3 s lease
            time.sleep(0.2)
            turned_away.append(rival.try_acquire("order:o-2", "rival", 0.3, time.time()) is None)

    journal.hooks["reserve"] = slow
    try:
        with Engine(f"sqlite:///{tmp_path / 'sagas.db'}", locks=locks, lease_ttl=0.3) as engine:
            run = engine.start(Linear, Order("o-2"), key="order:o-2")
        assert run.status is Status.COMPLETED
        assert turned_away == [True] * 5
        assert raw.exists(f"{space}order:o-2") == 0
    finally:
        _forget_namespace(raw, space)
        locks.close()
        rival.close()
        raw.close()


def test_async_redis_locks_exclude_renew_lapse_and_release(redis_url: str) -> None:
    from statesaga.locks import AsyncRedisLocks

    space, ttl = namespace(), 0.3

    async def scenario() -> None:
        one = AsyncRedisLocks(redis_url, namespace=space)
        two = AsyncRedisLocks(redis_url, namespace=space)
        try:
            lease = await one.try_acquire("cart:1", "a", ttl, time.time())
            assert lease is not None
            assert await one.client.get(f"{space}cart:1") == lease.token.encode()
            assert await two.try_acquire("cart:1", "b", ttl, time.time()) is None
            await asyncio.sleep(ttl * 0.6)
            now = time.time()
            renewed = await one.renew(lease, ttl, now)
            assert renewed is not None
            assert renewed.expires_at == now + ttl
            await asyncio.sleep(ttl * 0.6)
            assert await two.try_acquire("cart:1", "b", ttl, time.time()) is None
            await asyncio.sleep(ttl + 0.15)  # lapsed
            taken = await two.try_acquire("cart:1", "b", ttl, time.time())
            assert taken is not None
            assert await one.renew(lease, ttl, time.time()) is None
            await one.release(lease)  # cannot free the new holder's
            assert await one.try_acquire("cart:1", "c", ttl, time.time()) is None
            await two.release(taken)
            assert await one.try_acquire("cart:1", "a", ttl, time.time()) is not None
        finally:
            async for name in one.client.scan_iter(match=f"{space}*"):
                await one.client.delete(name)
            await one.aclose()
            await two.aclose()

    asyncio.run(scenario())


def test_async_redis_locks_ride_out_an_event_loop_that_stalls_past_their_timeout(
    redis_url: str,
) -> None:
    """A stalled loop (a long garbage collection with many runs in flight) is not a dead Redis.

    The answer came in time, but the loop saw it only after its timer ran out;
    each lock operation is safe to repeat (the lease's token tells ours apart),
    so it is sent once more rather than raising ``LocksUnavailable``.
    """
    from statesaga.locks import AsyncRedisLocks

    space = namespace()

    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection.send_packed_command
    stall = [False]

    async def sent_then_stalled(self: Any, *args: Any, **kwargs: Any) -> None:
        await send(self, *args, **kwargs)
        if stall[0]:  # the loop stalls while the answer is on its way (once)
            stall[0] = False
            asyncio.get_running_loop().call_soon(time.sleep, 0.5)

    async def stalled(operation: Any) -> Any:
        stall[0] = True
        with mock.patch.object(AbstractConnection, "send_packed_command", sent_then_stalled):
            return await operation

    async def scenario() -> None:
        locks = AsyncRedisLocks(redis_url, namespace=space, timeout=0.2)
        try:
            await locks.client.ping()  # a connection is open: the command is sent at once
            lease = await stalled(locks.try_acquire("cart:1", "a", 30, time.time()))
            assert lease is not None
            assert await locks.client.get(f"{space}cart:1") == lease.token.encode()
            assert await stalled(locks.renew(lease, 30, time.time())) is not None
            assert await stalled(locks.renew_many([lease], 30, time.time())) == [
                attrs.evolve(lease, expires_at=mock.ANY)
            ]
            await stalled(locks.release(lease))
            assert await locks.client.exists(f"{space}cart:1") == 0
        finally:
            async for name in locks.client.scan_iter(match=f"{space}*"):
                await locks.client.delete(name)
            await locks.aclose()

    asyncio.run(scenario())


def test_async_redis_locks_share_their_connections_among_many_tasks_at_once(
    redis_url: str,
) -> None:
    """More tasks at once than connections: each waits its turn for one, none fails."""
    from statesaga.locks import AsyncRedisLocks

    space, tasks = namespace(), 300

    async def one_entity(locks: AsyncRedisLocks, n: int) -> bool:
        lease = await locks.try_acquire(f"cart:{n}", "a", 5.0, time.time())
        assert lease is not None
        renewed = await locks.renew(lease, 5.0, time.time())
        await locks.release(lease)
        return renewed is not None

    async def scenario() -> None:
        for locks in (
            AsyncRedisLocks(redis_url, namespace=space),  # the default: 100 connections
            AsyncRedisLocks(redis_url, namespace=space, max_connections=8),
        ):
            try:
                done = await asyncio.gather(*(one_entity(locks, n) for n in range(tasks)))
                assert done == [True] * tasks
            finally:
                await locks.aclose()

    asyncio.run(scenario())


def test_redis_locks_whose_connections_all_stay_busy_say_so(redis_url: str) -> None:
    from statesaga.locks import AsyncRedisLocks, RedisLocks

    space = namespace()
    locks = RedisLocks(redis_url, namespace=space, max_connections=1, pool_timeout=0.1)
    busy = threading.Thread(
        target=locks.client.blpop, args=[f"{space}nothing"], kwargs={"timeout": 0.5}
    )
    busy.start()  # the one connection waits in a BLPOP
    time.sleep(0.1)
    with pytest.raises(LocksUnavailable, match=r"stayed busy for 0\.1s; raise max_connections"):
        locks.try_acquire("cart:1", "a", 5.0, time.time())
    busy.join()
    assert locks.try_acquire("cart:1", "a", 5.0, time.time()) is not None  # free again
    locks.client.delete(f"{space}cart:1")
    locks.close()

    async def scenario() -> None:
        alocks = AsyncRedisLocks(redis_url, namespace=space, max_connections=1, pool_timeout=0.1)
        try:
            blocked = asyncio.ensure_future(alocks.client.blpop([f"{space}nothing"], timeout=0.5))
            await asyncio.sleep(0.1)
            with pytest.raises(LocksUnavailable, match="stayed busy"):
                await alocks.try_acquire("cart:2", "a", 5.0, time.time())
            await blocked
        finally:
            await alocks.aclose()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="max_connections=0 must be at least 1"):
        RedisLocks(redis_url, max_connections=0)


def test_async_redis_locks_on_an_unreachable_redis_raise_locks_unavailable() -> None:
    from statesaga.locks import AsyncRedisLocks

    async def scenario() -> None:
        locks = AsyncRedisLocks(UNREACHABLE)
        started = time.monotonic()
        with pytest.raises(LocksUnavailable, match=re.escape(UNREACHABLE)) as caught:
            await locks.try_acquire("cart:1", "a", 5, 0.0)
        assert time.monotonic() - started < 2.5
        assert caught.value.key == "cart:1"
        await locks.release(Lease("cart:1", "a", "token", 5.0))  # logged, never raised
        await locks.aclose()

    asyncio.run(scenario())


def test_importing_statesaga_does_not_import_redis() -> None:
    code = (
        "import sys, statesaga, statesaga.locks, statesaga.engine\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
        "statesaga.locks.RedisLocks\n"
        "assert 'redis' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


# -- PostgreSQL advisory locks --------------------------------------------------------------------


def test_advisory_locks_need_postgresql(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'sagas.db'}")
    with pytest.raises(StateSagaError, match="AdvisoryLocks need a PostgreSQL store"):
        AdvisoryLocks(store)
    store.close()


def test_advisory_lock_ids_are_signed_64_bit_and_namespaced(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    locks, elsewhere = AdvisoryLocks(store, namespace="a:"), AdvisoryLocks(store, namespace="b:")
    ids = {locks.lock_id(f"cart:{n}") for n in range(1000)}
    assert len(ids) == 1000
    assert all(-(2**63) <= i < 2**63 for i in ids)
    assert any(i < 0 for i in ids)
    assert locks.lock_id("cart:1") == locks.lock_id("cart:1")
    assert elsewhere.lock_id("cart:1") != locks.lock_id("cart:1")
    lease = locks.try_acquire("cart:1", "a", 10, 0.0)
    assert lease is not None
    assert elsewhere.try_acquire("cart:1", "b", 10, 0.0) is not None  # another lock space
    locks.close()
    elsewhere.close()
    store.close()


def test_an_engine_with_advisory_locks_completes_a_run_and_turns_a_concurrent_start_away(
    postgres_url: str,
) -> None:
    space = namespace()
    stores = [SqlStore(postgres_url) for _ in range(2)]
    locks, other_locks = (AdvisoryLocks(store, namespace=space) for store in stores)
    key = f"order:{space}"
    inside, go_on = threading.Event(), threading.Event()

    def hold(_ctx: object) -> None:
        inside.set()
        go_on.wait(5)

    journal.hooks["reserve"] = hold
    runs = []
    try:
        with (
            Engine(stores[0], locks=locks) as engine,
            Engine(stores[1], locks=other_locks) as other,
        ):
            worker = threading.Thread(
                target=lambda: runs.append(engine.start(Linear, Order("o-3"), key=key))
            )
            worker.start()
            assert inside.wait(5)
            started = time.monotonic()
            with pytest.raises(EntityBusy, match="is busy: another run holds it"):
                other.start(Linear, Order("o-3"), key=key)
            assert time.monotonic() - started < 1
            go_on.set()
            worker.join(5)
            (run,) = runs
            assert run.status is Status.COMPLETED
            again = other.start(Linear, Order("o-4"), key=key)  # released: the key is free
            assert again.status is Status.COMPLETED
    finally:
        go_on.set()
        locks.close()
        other_locks.close()


def test_an_async_engine_takes_async_redis_locks_and_releases_them(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    from statesaga import AsyncEngine
    from statesaga.locks import AsyncRedisLocks

    space = namespace()
    raw = redis.Redis.from_url(redis_url)
    database = f"sqlite:///{tmp_path / 'sagas.db'}"
    seen: list[bytes | None] = []
    journal.hooks["reserve"] = lambda _ctx: seen.append(raw.get(f"{space}order:a-1"))

    async def main() -> None:
        locks = AsyncRedisLocks(redis_url, namespace=space)
        try:
            async with AsyncEngine(database, locks=locks) as engine:
                run = await engine.start(Linear, Order("a-1"), key="order:a-1")
                assert run.status is Status.COMPLETED
                await asyncio.sleep(0.05)  # the release is handed to the loop
                assert raw.exists(f"{space}order:a-1") == 0
                blocker = await locks.try_acquire("order:a-2", "someone", 30, 0)
                assert blocker is not None
                with pytest.raises(EntityBusy, match="order:a-2 is busy"):
                    await engine.start(Linear, Order("a-2"), key="order:a-2")
                await locks.release(blocker)
        finally:
            await locks.aclose()

    try:
        asyncio.run(main())
        assert seen[0] is not None  # the lease was in Redis while the step ran
    finally:
        _forget_namespace(raw, space)
        raw.close()


def test_the_sync_engine_refuses_async_locks(redis_url: str, tmp_path: Path) -> None:
    from statesaga.locks import AsyncRedisLocks

    locks = AsyncRedisLocks(redis_url, namespace=namespace())
    with pytest.raises(StateSagaError, match="use it with AsyncEngine"):
        Engine(f"sqlite:///{tmp_path / 'sagas.db'}", locks=locks)
    asyncio.run(locks.aclose())
