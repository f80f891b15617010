"""SQLite: a process's writers queue for the write lock instead of sleeping in SQLite.

Every write transaction a store opens on a SQLite file (the engine's own and a
transactional step's) first takes that file's in-process lock, shared by every
store on the file, and gives it back the moment it commits or rolls back, to
the writer that asked first. Between processes the writer first in its
process's queue also takes the file's turn (a lock on ``<database>-statesaga-lock``),
so a process that writes back to back cannot keep another one out. Many
threads, and many processes, writing at once all finish; a writer that waits
past ``busy_timeout`` gets a clear busy error, with nothing written; and a
transaction that fails, whose connection is thrown away, or whose process is
killed, never keeps the lock.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from writers_sagas import Basket, Checkout, stock, store_at

from statesaga import Engine, Status, StoreError
from statesaga.store.sqlite_writers import writers_for


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


# -- several processes on one file ---------------------------------------------------------

CHILD = Path(__file__).with_name("writers_child.py")


def child(*args: str) -> subprocess.Popen[str]:
    """Start ``writers_child.py`` with this interpreter, able to import this checkout."""
    env = dict(os.environ)
    root = str(CHILD.parents[2])
    paths = (root, str(CHILD.parent), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )


def test_a_writer_in_another_process_outwaited_is_a_clear_error_that_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    with Engine(store_at(path, busy_timeout=0.3), sagas=[Checkout]) as engine:
        holder = child("hold", str(path), "1.5")
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"  # it holds the write lock now
            with pytest.raises(StoreError, match="database is locked: a writer in another process"):
                engine.start(Checkout, Basket("b-1"))  # it kept the file's turn past 0.3 s
            assert engine.list(saga=Checkout.name) == []  # nothing of the refused start
            assert holder.wait(timeout=30) == 0
            assert engine.start(Checkout, Basket("b-1")).status is Status.COMPLETED
        finally:
            holder.kill()
            holder.communicate()


def test_many_processes_writing_one_file_all_finish(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    store_at(path).close()
    processes, per_process = 3, 40
    started = [child("checkouts", str(path), str(per_process), f"p{n}") for n in range(processes)]
    outputs = []
    try:
        for process in started:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            outputs.append(out.strip())
    finally:
        for process in started:
            process.kill()
            process.wait()
    assert outputs == [f"done {per_process}"] * processes
    with Engine(store_at(path), sagas=[Checkout]) as engine:
        runs = engine.list(saga=Checkout.name, limit=1000)
        assert len(runs) == processes * per_process
        assert {run.status for run in runs} == {Status.COMPLETED}
        with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
            rows = connection.execute(sa.select(sa.func.count()).select_from(stock)).scalar()
        assert rows == processes * per_process


def turn_is_taken(path: Path) -> bool:
    """Whether a process holds the write turn of database ``path`` (byte 1 of its lock file).

    Looked at from a process of its own: record locks belong to a process, so this
    one would always get a lock it holds itself (and closing its file would drop them).
    """
    looked = subprocess.run(
        [sys.executable, "-c", LOOK, str(path)], capture_output=True, text=True, check=True
    )
    return looked.stdout.strip() == "taken"


LOOK = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1] + "-statesaga-lock", os.O_RDWR | os.O_CREAT)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1)
    print("free")
except OSError as error:
    print("taken" if error.errno in (errno.EAGAIN, errno.EACCES) else error)
"""


def test_a_process_holds_the_files_turn_exactly_while_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    store = store_at(path)
    assert not turn_is_taken(path)
    with store.transaction() as connection:
        connection.execute(stock.insert().values(run_id="mine", step="mine"))
        assert turn_is_taken(path)
    assert not turn_is_taken(path)  # given back at commit
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(stock.c.run_id)).scalars().all() == ["mine"]
    store.close()


def test_a_process_writing_back_to_back_cannot_keep_another_out(tmp_path: Path) -> None:
    # SQLite's busy handler alone sleeps up to 100 ms between tries and loses to a process
    # that takes the lock straight back; the file's turn lets the waiting process in next
    path = tmp_path / "shop.db"
    store_at(path).close()
    hog = child("hog", str(path), "6")
    try:
        assert hog.stdout is not None
        assert hog.stdout.readline().strip() == "hogging"
        wait_until(lambda: turn_is_taken(path))
        with Engine(store_at(path, busy_timeout=1.0), sagas=[Checkout]) as engine:
            runs = [engine.start(Checkout, Basket(f"b-{n}")) for n in range(20)]
            assert hog.poll() is None, "the other process stopped writing before the end"
        assert [run.status for run in runs] == [Status.COMPLETED] * 20
        out, err = hog.communicate(timeout=30)
        assert hog.returncode == 0, err
        assert int(out.split()[-1]) > 20  # it went on writing all along
    finally:
        hog.kill()
        hog.communicate()


def test_a_process_killed_while_writing_gives_the_turn_back(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    store_at(path).close()
    holder = child("hold", str(path), "60")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert turn_is_taken(path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    assert not turn_is_taken(path)
    with Engine(store_at(path, busy_timeout=2.0), sagas=[Checkout]) as engine:
        assert engine.start(Checkout, Basket("b-1")).status is Status.COMPLETED


def test_a_process_hands_the_turn_on_to_its_next_writer_for_a_moment_only(
    tmp_path: Path,
) -> None:
    writers = writers_for(str(tmp_path / "slice.db"))
    turn = writers.turn
    assert turn is not None

    def handed_on(wait_first: float) -> bool:
        """Owner 2 waits while owner 1 writes; whether 1 handed it the turn it had taken."""
        writers.acquire(owner=1, timeout=5.0)
        taken_at = turn.taken_at
        second = threading.Thread(target=writers.acquire, kwargs={"owner": 2, "timeout": 5.0})
        second.start()
        wait_until(lambda: writers.waiting == 1)
        time.sleep(wait_first)
        writers.release(owner=1)
        second.join(timeout=5)
        assert writers.holder == 2
        assert turn.held
        kept = turn.taken_at == taken_at
        writers.release(owner=2)  # nobody waits in this process: given back
        assert writers.holder is None
        assert not turn.held
        assert not turn_is_taken(tmp_path / "slice.db")
        return kept

    assert handed_on(wait_first=0.0)  # within the slice: no gap, no new take
    assert not handed_on(wait_first=turn.SLICE * 2)  # past it: given back, then taken anew


def test_without_a_usable_lock_file_processes_fall_back_to_sqlites_busy_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shop.db"
    (tmp_path / "shop.db-statesaga-lock").mkdir()  # in the way: the lock file cannot be opened
    with Engine(store_at(path), sagas=[Checkout]) as engine:
        runs = [engine.start(Checkout, Basket(f"b-{n}")) for n in range(3)]
    assert [run.status for run in runs] == [Status.COMPLETED] * 3
    said = [r.getMessage() for r in caplog.records if "statesaga-lock" in r.getMessage()]
    assert len(said) == 1  # said once, not at every write
    assert "SQLite's busy handler" in said[0]
