"""Inspection: counts per status, the alert rates, and listing by correlation id and time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sagas
from sagas import Fatal, Order, journal
from typer.testing import CliRunner

from statesaga import Engine, StateSagaError
from statesaga.cli import app
from statesaga.inspection import parse_time, stats

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()


def populate(engine: Engine, offset: list[float]) -> None:
    """Two completed, one compensated, one failed compensation, one deadline; one waiting."""
    engine.start(sagas.Linear, Order("ok-1"), correlation_id="batch-a")
    engine.start(sagas.Linear, Order("ok-2"), correlation_id="batch-a")
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    engine.start(sagas.Linear, Order("undone"), correlation_id="batch-b")
    journal.fail["undo_reserve"] = -1
    engine.start(sagas.Linear, Order("failed"), correlation_id="batch-b")
    journal.fail.clear()
    engine.start(sagas.Waiting, Order("late"), deadline=5)
    engine.start(sagas.Waiting, Order("waiting"))
    offset[0] -= 6  # the clock moves past the first deadline
    engine.recover()


def test_stats_count_statuses_and_compute_the_alert_rates(db: str) -> None:
    offset = [0.0]
    with Engine(db, clock=lambda: time.time() - offset[0]) as engine:
        populate(engine, offset)
        report = stats(engine.store, since=time.time() - HOUR, until=time.time() + 60)
        assert report.counts == {"completed": 2, "compensated": 2, "failed": 1, "waiting": 1}
        assert report.finished == 5
        assert report.failure_rate == pytest.approx(1 / 5)
        assert report.timeout_rate == pytest.approx(1 / 5)
        assert report.failed_compensations == 1
        assert stats(
            engine.store, since=time.time() - HOUR, until=time.time() + 60, saga="waiting"
        ).counts == {
            "compensated": 1,
            "waiting": 1,
        }
        later = stats(engine.store, since=time.time() + 30, until=time.time() + 60)
        assert (later.finished, later.failure_rate, later.timeout_rate) == (0, 0.0, 0.0)


def test_the_stats_and_list_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATESAGA_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    url = f"sqlite:///{tmp_path / 's.db'}"
    offset = [60.0]  # a minute ago: inside --window 1h, and runs never in the future
    with Engine(url, clock=lambda: time.time() - offset[0]) as engine:
        populate(engine, offset)
    cli = CliRunner()
    shown = cli.invoke(app, ["stats", "--db", url, "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["counts"]["failed"] == 1
    assert report["failure_rate"] == pytest.approx(0.2)
    assert report["failed_compensations"] == 1
    table = cli.invoke(app, ["stats", "--db", url, "--window", "1h"])
    assert table.exit_code == 0, table.output
    for text in ("failure rate", "20.0%", "timeout rate", "failed compensations", "> 5%"):
        assert text in table.output

    listed = cli.invoke(app, ["list", "--db", url, "--correlation-id", "batch-b", "--json"])
    assert {r["correlation_id"] for r in json.loads(listed.output)} == {"batch-b"}
    assert len(json.loads(listed.output)) == 2
    recent = cli.invoke(app, ["list", "--db", url, "--since", "1h", "--json"])
    assert len(json.loads(recent.output)) == 6
    none = cli.invoke(app, ["list", "--db", url, "--until", "2000-01-01T00:00:00", "--json"])
    assert json.loads(none.output) == []
    bad = cli.invoke(app, ["list", "--db", url, "--since", "yesterday"])
    assert bad.exit_code == 1
    assert "'yesterday' is not a time" in bad.output


def test_parse_time_takes_ages_and_iso_times() -> None:
    assert parse_time("90m", now=10_000.0) == 10_000.0 - 5400
    assert parse_time("2026-01-01T00:00:00+01:00") == parse_time("2025-12-31T23:00:00")
    with pytest.raises(StateSagaError, match="not a time"):
        parse_time("soon")
