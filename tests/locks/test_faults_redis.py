"""Redis faults: a lock key deleted mid-run, and Redis restarted mid-run.

Redis is only an efficiency aid: whatever happens to it, the database's guards
(one open run per key, the epoch compare-and-set) keep every write single and
every run heading for a terminal state. The restart test runs a private
``redis-server`` on a free loopback port and kills it by process id.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sagas
import sqlalchemy as sa
from sagas import Order, journal

from statesaga import Engine, EntityBusy, LocksUnavailable, Status
from statesaga.locks import RedisLocks


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


def effects(engine: Engine) -> list[tuple[str, str]]:
    with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
        query = sa.select(sagas.effects.c.instance_id, sagas.effects.c.step)
        return [(row[0], row[1]) for row in connection.execute(query)]


def test_a_lock_key_deleted_mid_run_lets_no_second_run_in(redis_url: str, tmp_path: Path) -> None:
    import redis

    space = f"statesaga-fault:{uuid.uuid4().hex}:"
    raw = redis.Redis.from_url(redis_url)
    database = f"sqlite:///{tmp_path / 'sagas.db'}"
    inside, go_on = threading.Event(), threading.Event()
    outcomes: list[object] = []

    def pause(_ctx: object) -> None:
        inside.set()
        go_on.wait(5)

    journal.hooks["charge"] = pause  # after the transactional step committed
    locks = RedisLocks(redis_url, namespace=space)
    other_locks = RedisLocks(redis_url, namespace=space)
    try:
        with Engine(database, locks=locks) as first, Engine(database, locks=other_locks) as second:
            sagas.effects.metadata.create_all(first.store.engine)  # type: ignore[attr-defined]
            worker = threading.Thread(
                target=lambda: outcomes.append(
                    first.start(sagas.Transactional, Order("k-1"), key="order:k-1")
                )
            )
            worker.start()
            assert inside.wait(5)
            assert raw.delete(f"{space}order:k-1") == 1  # failover lost the key
            journal.hooks.clear()
            with pytest.raises(EntityBusy, match="already has an open instance"):
                second.start(sagas.Transactional, Order("k-1"), key="order:k-1")
            go_on.set()
            worker.join(5)
            (run,) = outcomes
            assert run.status is Status.COMPLETED  # type: ignore[attr-defined]
            assert effects(first) == [(run.id, "reserve")]  # type: ignore[attr-defined]
            assert len(first.list()) == 1
    finally:
        go_on.set()
        for key in raw.scan_iter(f"{space}*"):
            raw.delete(key)
        locks.close()
        other_locks.close()
        raw.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port, killed by its pid."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path, redis_url: str) -> Iterator[PrivateRedis]:
    del redis_url  # the same requirement as the shared server: Redis must be installed
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_redis_restarted_mid_run_leaves_every_run_terminal_and_no_stale_write(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'sagas.db'}"
    runs = 12
    started = threading.Barrier(runs + 1)
    go_on = threading.Event()
    results: list[object] = []
    journal.hooks["charge"] = lambda _ctx: (started.wait(10), go_on.wait(10))

    locks = RedisLocks(private_redis.url, connect_timeout=0.5, timeout=0.5)
    with Engine(database, locks=locks, lease_ttl=2) as engine:
        sagas.effects.metadata.create_all(engine.store.engine)  # type: ignore[attr-defined]

        def one(n: int) -> None:
            try:
                results.append(
                    engine.start(sagas.Transactional, Order(f"r-{n}"), key=f"order:r-{n}")
                )
            except Exception as error:  # recorded and checked below
                results.append(error)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(runs)]
        for thread in threads:
            thread.start()
        started.wait(10)  # every run is inside its second step, holding its lock
        private_redis.kill()
        journal.hooks.clear()
        with pytest.raises(LocksUnavailable):  # nothing new starts while Redis is down
            engine.start(sagas.Transactional, Order("r-new"), key="order:r-new")
        private_redis.start()  # an empty Redis: every lock is gone
        go_on.set()
        for thread in threads:
            thread.join(20)
        recovered = engine.recover()
        finished = {run.id: run.status for run in engine.list(limit=100)}
        rows = effects(engine)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len(finished) == runs
    assert set(finished.values()) == {Status.COMPLETED}
    assert recovered == []  # nothing was left behind for recovery
    assert sorted(instance for instance, _ in rows) == sorted(finished)  # one write each
