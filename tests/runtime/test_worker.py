"""The worker: it drives what needs driving, shares work with other workers, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sagas
from sagas import Order, journal

from statesaga import Engine, Status
from statesaga.worker import Worker


def test_a_worker_drives_timed_out_waits_and_due_retries_then_stops(db: str) -> None:
    journal.calls.clear()
    journal.fail.clear()
    with Engine(db, lease_ttl=5) as engine:
        waiting = engine.start(sagas.Waiting, Order("w-1"), deadline=0.3)
        assert waiting.status is Status.WAITING
        stop = threading.Event()
        worker = Worker(engine, concurrency=2, poll_interval=0.05)
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while engine.get(waiting.id).status is not Status.COMPENSATED:
                assert time.monotonic() < deadline, "the worker did not fire the deadline"
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
    assert not thread.is_alive()
    assert worker.stats.runs == 1
    assert worker.stats.statuses["compensated"] == 1


def test_many_workers_drive_each_run_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    clock = [1_000.0]
    with Engine(url, clock=lambda: clock[0], sagas=[sagas.Waiting]) as starter:
        ids = [starter.start(sagas.Waiting, Order(f"m-{n}")).id for n in range(30)]
    clock[0] += 120  # every wait has timed out
    engines = [Engine(url, clock=lambda: clock[0], sagas=[sagas.Waiting]) for _ in range(3)]
    workers = [Worker(e, concurrency=2, poll_interval=0.02, batch=3) for e in engines]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while sum(w.stats.runs for w in workers) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(10)
    with Engine(url, sagas=[sagas.Waiting]) as reader:
        statuses = {reader.get(i).status for i in ids}
        epochs = {reader.store.get(i).epoch for i in ids}  # type: ignore[union-attr]
    for engine in engines:
        engine.close()
    assert sum(w.stats.runs for w in workers) == len(ids)
    assert statuses == {Status.COMPENSATED}
    assert epochs == {2}  # claimed exactly once each


def test_the_worker_command_stops_on_sigterm_and_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Engine(url) as engine:
        run = engine.start(sagas.Waiting, Order("c-1"), deadline=0.2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "worker",
            "--saga",
            "sagas:Waiting",
            "--db",
            url,
            "--poll",
            "0.05",
            "--log-every",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        with Engine(url, sagas=[sagas.Waiting]) as reader:
            while reader.get(run.id).status is not Status.COMPENSATED:
                assert time.monotonic() < deadline, "the worker did not drive the run"
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "started: 1 thread(s), driving waiting" in output
    assert "healthy:" in output
    assert "stopped: 1 runs driven (1 compensated), 0 errors" in output


def test_the_worker_command_run_in_process_gives_the_signals_back(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``statesaga worker`` called from Python (not as a process of its own) stops on SIGTERM
    like the command, then puts the process's own SIGINT and SIGTERM handlers back (Ctrl-C
    raises ``KeyboardInterrupt`` again afterwards, not a stale stop)."""
    from statesaga.cli import app

    url = f"sqlite:///{tmp_path / 'in-process.db'}"
    with Engine(url):
        pass  # the store exists before the worker opens it
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))
    mine = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)
        done = threading.Event()

        def stop_the_worker_once_it_listens() -> None:
            # SIGTERM only once the worker's handler is in place (the default one would
            # end the test run itself)
            while not done.wait(0.02):
                if signal.getsignal(signal.SIGTERM) is not before:
                    time.sleep(0.3)  # let it poll a few times
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        stopper = threading.Thread(target=stop_the_worker_once_it_listens)
        stopper.start()
        try:
            result = cli.invoke(
                app, ["worker", "--saga", "sagas:Waiting", "--db", url, "--poll", "0.05"]
            )
        finally:
            done.set()
            stopper.join(10)
        assert result.exit_code == 0, result.output
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGINT, mine)
