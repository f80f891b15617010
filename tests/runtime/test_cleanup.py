"""Retention: only finished runs old enough go, with their history; open and failed ones stay."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sagas
from sagas import Fatal, Order, journal
from typer.testing import CliRunner

from statesaga import Engine, Status
from statesaga.cli import app
from statesaga.retention import Cleanup, cleanup
from statesaga.worker import Worker

DAY = 86400.0


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()


def populate(engine: Engine, offset: list[float], age_days: float) -> dict[str, str]:
    """One run of each kind, finished ``age_days`` before the real time."""
    offset[0] = age_days * DAY
    ids = {"completed": engine.start(sagas.Linear, Order(f"ok-{age_days}")).id}
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    ids["compensated"] = engine.start(sagas.Linear, Order(f"undone-{age_days}")).id
    journal.fail["undo_reserve"] = -1
    ids["failed"] = engine.start(sagas.Linear, Order(f"failed-{age_days}")).id
    journal.fail.clear()
    ids["waiting"] = engine.start(sagas.Waiting, Order(f"waiting-{age_days}")).id
    return ids


def clocked(db: str) -> tuple[Engine, list[float]]:
    """An engine whose clock runs ``offset[0]`` seconds behind the real one."""
    offset = [0.0]
    clock: Callable[[], float] = lambda: time.time() - offset[0]  # noqa: E731
    return Engine(db, clock=clock), offset


def test_cleanup_removes_only_old_finished_runs_and_their_history(db: str) -> None:
    engine, now = clocked(db)
    with engine:
        old = populate(engine, now, age_days=40)
        new = populate(engine, now, age_days=10)
        assert [engine.get(i).status.value for i in old.values()] == list(old)
        history_before = sum(len(engine.history(i)) for i in (*old.values(), *new.values()))

        planned = cleanup(engine.store, older_than=30 * DAY, dry_run=True)
        assert planned.dry_run
        assert planned.instances == 2
        assert len(engine.list(limit=100)) == 8  # a dry run deletes nothing

        done = cleanup(engine.store, older_than=30 * DAY, batch=1)
        assert done == Cleanup(instances=2, history=planned.history)
        left = {run.id for run in engine.list(limit=100)}
        assert left == {old["failed"], old["waiting"], *new.values()}
        history_after = sum(len(engine.history(i)) for i in left)
        assert history_after == history_before - planned.history
        assert engine.get(old["waiting"]).status is Status.WAITING
        assert cleanup(engine.store, older_than=30 * DAY) == Cleanup(0, 0)


def test_progress_is_reported_per_batch() -> None:
    engine, now = clocked("sqlite://")
    with engine:
        for n in range(5):
            now[0] = 40 * DAY
            engine.start(sagas.Linear, Order(f"p-{n}"))
        seen: list[tuple[int, int]] = []
        result = cleanup(
            engine.store, older_than=DAY, batch=2, progress=lambda d, t: seen.append((d, t))
        )
    assert result.instances == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_the_cleanup_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATESAGA_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine, now = clocked(url)
    with engine:
        populate(engine, now, age_days=40)
    cli = CliRunner()
    planned = cli.invoke(app, ["cleanup", "--older-than", "30d", "--dry-run", "--db", url])
    assert planned.exit_code == 0, planned.output
    assert "would delete 2 run(s)" in planned.output
    done = cli.invoke(
        app, ["cleanup", "--older-than", "30d", "--batch", "1", "--db", url, "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["instances"] == 2
    again = cli.invoke(app, ["cleanup", "--older-than", "30d", "--db", url])
    assert "deleted 0 run(s)" in again.output
    bad = cli.invoke(app, ["cleanup", "--older-than", "a month", "--db", url])
    assert bad.exit_code == 1
    assert "--older-than 'a month' is not an age" in bad.output


def test_a_worker_with_retention_days_cleans_up(tmp_path: Path) -> None:
    engine, now = clocked(f"sqlite:///{tmp_path / 'w.db'}")
    with engine:
        ids = populate(engine, now, age_days=40)
        now[0] = 0.0
        engine.register(sagas.Linear, sagas.Waiting)
        stop = threading.Event()
        worker = Worker(engine, poll_interval=0.05, retention_days=30)
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while engine.store.get(ids["completed"]) is not None:
                assert time.monotonic() < deadline, "the worker did not clean up"
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)
        assert engine.store.get(ids["failed"]) is not None
        assert engine.store.get(ids["compensated"]) is None
