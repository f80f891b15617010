"""Threads waiting for a database connection are served in the order they came.

With more threads than connections, SQLAlchemy's own pool lets a thread that
gives a connection back (or one that just arrived) take it again before the
thread that waited longest: under load a few threads lose that race again and
again. The store's pool (``FairQueuePool``) and the hot path's connections
(``HotConnections``) hand a connection given back to the longest waiting thread.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from statesaga import StoreError
from statesaga.store import SqlStore
from statesaga.store.hot import HotConnection, HotConnections
from statesaga.store.pool import FairQueue, FairQueuePool


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def one_connection(tmp_path: Path, timeout: float = 5.0) -> sa.Engine:
    return sa.create_engine(
        f"sqlite:///{tmp_path / 'pool.db'}",
        poolclass=FairQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout,
    )


def waiting(engine: sa.Engine) -> int:
    queue = engine.pool._pool  # type: ignore[attr-defined]
    assert isinstance(queue, FairQueue)
    return queue.waiting


# -- the store's pool ----------------------------------------------------------------------------


def test_the_stores_engine_serves_waiting_threads_in_order(
    tmp_path: Path, postgres_url: str
) -> None:
    for url in (f"sqlite:///{tmp_path / 'store.db'}", postgres_url):
        store = SqlStore(url, pool_size=2, max_overflow=1, hot_connections=1)
        try:
            assert isinstance(store.engine.pool, FairQueuePool), url
            assert store.engine.pool.size() == 2, url
        finally:
            store.close()


def test_threads_waiting_for_a_connection_get_it_in_the_order_they_came(tmp_path: Path) -> None:
    engine = one_connection(tmp_path)
    order: list[int] = []

    def checkout(number: int) -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            order.append(number)

    held = engine.connect()
    threads = []
    for number in range(1, 9):
        thread = threading.Thread(target=checkout, args=(number,))
        thread.start()
        threads.append(thread)
        wait_until(lambda number=number: waiting(engine) == number)  # behind the others
    held.close()
    for thread in threads:
        thread.join()
    assert order == list(range(1, 9))
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_a_thread_giving_a_connection_back_queues_behind_a_waiting_one(tmp_path: Path) -> None:
    engine = one_connection(tmp_path)
    order: list[str] = []
    held = engine.connect()
    waiter = threading.Thread(target=lambda: (engine.connect().close(), order.append("waiter")))
    waiter.start()
    wait_until(lambda: waiting(engine) == 1)
    held.close()
    # asking again at once, before the woken thread runs: it must wait its turn
    with engine.connect():
        order.append("again")
    waiter.join()
    assert order == ["waiter", "again"]
    engine.dispose()


def test_a_thread_that_gives_up_waiting_leaves_the_line(tmp_path: Path) -> None:
    engine = one_connection(tmp_path, timeout=0.05)
    held = engine.connect()
    with pytest.raises(StoreError, match=r"raise the pool_size .* setting") as raised:
        engine.connect()
    assert "QueuePool limit of size 1 overflow 0" in str(raised.value)  # SQLAlchemy's words
    assert waiting(engine) == 0
    held.close()
    started = time.monotonic()
    with engine.connect() as connection:  # the connection is not kept for the thread that left
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert time.monotonic() - started < 0.05
    engine.dispose()


def test_many_threads_on_a_small_pool_all_finish_and_give_every_connection_back(
    postgres_url: str,
) -> None:
    store = SqlStore(postgres_url, pool_size=2, max_overflow=2, hot_connections=1)
    done: list[int] = []

    def work(number: int) -> None:
        for _ in range(20):
            with store.engine.connect() as connection:
                connection.exec_driver_sql("SELECT pg_sleep(0.001)")
        done.append(number)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(done) == list(range(24))
    pool = store.engine.pool
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert pool.checkedin() <= 2  # type: ignore[attr-defined]  # overflow ones closed
    store.close()


# -- the hot path's connections ------------------------------------------------------------------


def test_hot_connections_serve_waiting_threads_in_order(tmp_path: Path) -> None:
    hot = HotConnections(sa.create_engine(f"sqlite:///{tmp_path / 'hot.db'}"), size=1)
    order: list[int] = []

    def take(number: int) -> None:
        connection = hot.take()
        order.append(number)
        hot.give_back(connection)

    held = hot.take()
    threads = []
    for number in range(1, 9):
        thread = threading.Thread(target=take, args=(number,))
        thread.start()
        threads.append(thread)
        wait_until(lambda number=number: hot.waiting == number)
    hot.give_back(held)
    again = hot.take()  # asked at once: behind the eight
    order.append(0)
    hot.give_back(again)
    for thread in threads:
        thread.join()
    assert order == [*range(1, 9), 0]
    assert (hot.open, hot.waiting) == (1, 0)
    hot.close()


def test_a_broken_hot_connection_leaves_its_place_to_a_waiting_thread(tmp_path: Path) -> None:
    hot = HotConnections(sa.create_engine(f"sqlite:///{tmp_path / 'hot.db'}"), size=1)
    broken = hot.take()
    got: list[HotConnection] = []
    waiter = threading.Thread(target=lambda: got.append(hot.take()))
    waiter.start()
    wait_until(lambda: hot.waiting == 1)
    broken.broken = True
    hot.give_back(broken)  # dropped: the waiting thread opens a fresh one in its place
    waiter.join()
    [fresh] = got
    assert fresh is not broken
    assert hot.open == 1
    hot.give_back(fresh)
    hot.close()


def test_a_thread_that_gives_up_on_the_hot_path_leaves_the_line(tmp_path: Path) -> None:
    hot = HotConnections(sa.create_engine(f"sqlite:///{tmp_path / 'hot.db'}"), size=1, timeout=0.05)
    held = hot.take()
    with pytest.raises(StoreError, match="raise the hot_connections setting"):
        hot.take()
    assert hot.waiting == 0
    hot.give_back(held)
    assert hot.take() is held  # kept idle, not handed to the thread that left
    hot.close()


def ctrl_c() -> None:
    """Ctrl-C: SIGINT to the main thread, which Python raises there as ``KeyboardInterrupt``."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises ``KeyboardInterrupt`` here, even in a process started with it ignored
    (a background job, as CI may run the tests)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_a_thread_interrupted_while_waiting_leaves_the_line(tmp_path: Path) -> None:
    engine = one_connection(tmp_path)
    hot = HotConnections(sa.create_engine(f"sqlite:///{tmp_path / 'hot.db'}"), size=1)
    held, taken = engine.connect(), hot.take()
    for wait_for, waiters in (
        (engine.connect, lambda: waiting(engine)),
        (hot.take, lambda: hot.waiting),
    ):
        interrupter = threading.Thread(
            target=lambda waiters=waiters: (wait_until(lambda: waiters() == 1), ctrl_c())
        )
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the main thread waits
            wait_for()
        interrupter.join()
        assert waiters() == 0
    held.close()
    hot.give_back(taken)
    with engine.connect():  # what was given back went to no one who had left
        assert hot.take() is taken
    engine.dispose()
    hot.close()


def test_the_store_sizes_its_pool_from_the_settings_on_sqlite_files_too(tmp_path: Path) -> None:
    """``pool_size`` and ``max_overflow`` bound a SQLite file's pool as they do PostgreSQL's;
    by default a process holds at most 5 + 0 pooled and 5 hot-path connections."""
    store = SqlStore(f"sqlite:///{tmp_path / 'sized.db'}", pool_size=3, max_overflow=1)
    pool = store.engine.pool
    assert isinstance(pool, FairQueuePool)
    assert (pool.size(), pool._max_overflow) == (3, 1)  # type: ignore[attr-defined]
    store.close()
    default = SqlStore(f"sqlite:///{tmp_path / 'default.db'}")
    pooled = default.engine.pool
    assert (pooled.size(), pooled._max_overflow) == (5, 0)  # type: ignore[attr-defined]
    assert default._hot.size == 5
    default.close()
