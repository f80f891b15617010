"""What the command prints: whole ids when piped, id prefixes, JSON for scripts, help, version,
shell completion, and ``recover`` that drains every due run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sagas
from cli_helpers import CHECKOUT, LINEAR
from sagas import Order
from typer.testing import CliRunner

from statesaga import Engine, Status
from statesaga.cli import app


def started(cli: CliRunner, order_id: str) -> dict[str, object]:
    result = cli.invoke(app, ["start", LINEAR, "-i", json.dumps({"order_id": order_id}), "--json"])
    assert result.exit_code == 0, result.output
    run: dict[str, object] = json.loads(result.output)
    return run


def test_piped_tables_show_whole_ids_and_names(cli: CliRunner) -> None:
    ids = [str(started(cli, f"o-{n}")["id"]) for n in range(3)]
    listed = cli.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    for run_id in ids:
        assert run_id in listed.output
    assert "…" not in listed.output
    checked = cli.invoke(app, ["check", CHECKOUT])
    assert "authorize_payment" in checked.output
    assert "…" not in checked.output


def test_start_json_is_the_run_with_its_history_and_iso_times(cli: CliRunner) -> None:
    run = started(cli, "o-1")
    history = run["history"]
    assert isinstance(history, list)
    assert [entry["step"] for entry in history if entry["step"]] == [
        "reserve",
        "charge",
        "ship",
    ]
    shown = json.loads(cli.invoke(app, ["show", str(run["id"]), "--json"]).output)
    assert shown == run
    for moment in (run["created_at"], run["updated_at"], history[0]["finished_at"]):
        assert isinstance(moment, str)
        assert datetime.fromisoformat(moment).utcoffset() is not None


def test_a_run_is_named_by_the_start_of_its_id(cli: CliRunner) -> None:
    runs = [str(started(cli, f"o-{n}")["id"]) for n in range(20)]
    target = runs[0]
    shown = cli.invoke(app, ["show", target[:8]])
    assert shown.exit_code == 0, shown.output
    assert target in shown.output
    # with 20 random hex ids, some first character is shared by two of them
    first = [run_id[0] for run_id in runs]
    shared = next(c for c in first if first.count(c) > 1)
    ambiguous = cli.invoke(app, ["show", shared])
    assert ambiguous.exit_code == 1
    assert f"{shared!r} starts several runs' ids" in ambiguous.output
    assert "pass more of the id" in ambiguous.output
    missing = cli.invoke(app, ["show", "zz"])
    assert missing.exit_code == 1
    assert "no run has an id starting with 'zz'" in missing.output


@pytest.fixture
def journal() -> Iterator[sagas.Journal]:
    """The test sagas' journal of calls and planted failures, emptied around a test."""
    sagas.journal.calls.clear()
    sagas.journal.fail.clear()
    yield sagas.journal
    sagas.journal.fail.clear()
    sagas.journal.error.clear()


def test_cancel_and_retry_take_an_id_prefix(
    cli: CliRunner, tmp_path: Path, journal: sagas.Journal
) -> None:
    db = f"sqlite:///{tmp_path / 'statesaga.db'}"
    with Engine(db) as engine:
        waiting = engine.start(sagas.Waiting, Order("o-9"))
    cancelled = cli.invoke(app, ["cancel", waiting.id[:10], "--saga", "sagas:Waiting", "--json"])
    assert cancelled.exit_code == 0, cancelled.output
    delivery = json.loads(cancelled.output)
    assert delivery["status"] == "accepted"
    assert delivery["run"]["id"] == waiting.id
    assert delivery["run"]["status"] == "compensated"

    journal.fail.update({"ship": 1, "undo_reserve": -1})  # ship fails once; its undo never works
    journal.error["ship"] = sagas.Fatal
    with Engine(db) as engine:
        failed = engine.start(sagas.Linear, Order("o-10"))
    assert failed.status is Status.FAILED
    journal.fail.clear()
    retried = cli.invoke(app, ["retry", failed.id[:10], "--saga", LINEAR, "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output)["id"] == failed.id
    assert json.loads(retried.output)["status"] == "compensated"


def test_list_and_stats_take_saga_as_a_name_or_a_class(cli: CliRunner) -> None:
    started(cli, "o-1")
    for given in ("linear", LINEAR):
        listed = cli.invoke(app, ["list", "--saga", given, "--json"])
        assert len(json.loads(listed.output)) == 1, listed.output
        stats = cli.invoke(app, ["stats", "--saga", given, "--json"])
        assert json.loads(stats.output)["counts"]["completed"] == 1, stats.output
    assert json.loads(cli.invoke(app, ["list", "--saga", "waiting", "--json"]).output) == []


def test_check_shows_retries_timeouts_and_undo_on_failure(cli: CliRunner) -> None:
    shown = cli.invoke(app, ["check", CHECKOUT])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    for text in ("retry", "timeout", "undo on failure", "tries", "waiting states time out"):
        assert text in flat, text
    described = json.loads(cli.invoke(app, ["check", CHECKOUT, "--json"]).output)[0]
    steps = [t["step"] for t in described["transitions"] if t["step"]]
    authorize = next(s for s in steps if s["function"] == "authorize_payment")
    assert authorize["undo_on_failure"] is True
    assert authorize["retry"]["attempts"] >= 1
    assert described["state_timeouts"]


def test_recover_drains_every_due_run_batch_after_batch(cli: CliRunner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'statesaga.db'}"
    # runs that began waiting two minutes ago, for at most a minute: all due now
    with Engine(db, clock=lambda: time.time() - 120) as engine:
        waiting = [engine.start(sagas.Waiting, Order(f"o-{n}")).id for n in range(25)]
    result = cli.invoke(app, ["recover", "--saga", "sagas:Waiting", "--batch", "10"])
    assert result.exit_code == 0, result.output
    assert "recovered 25 run(s): 25 compensated" in result.output
    with Engine(db) as engine:
        assert {engine.get(run_id).status for run_id in waiting} == {Status.COMPENSATED}
    again = cli.invoke(app, ["recover", "--saga", "sagas:Waiting", "--json"])
    assert json.loads(again.output) == []


def test_help_reads_as_text(cli: CliRunner) -> None:
    upgrade = cli.invoke(app, ["db", "upgrade", "--help"])
    assert "``" not in upgrade.output
    assert "schema setting" in upgrade.output
    listed = " ".join(cli.invoke(app, ["list", "--help"]).output.split())
    assert "--json Print JSON" in listed
    assert "<bool>" not in listed


def test_version(cli: CliRunner) -> None:
    from statesaga import __version__

    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"statesaga {__version__}\n"


def test_shell_completion_completes_commands_and_options(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "statesaga"
    if not script.exists():
        pytest.skip("the statesaga console script is not installed beside this Python")
    # a user's shell, not this test run's environment (which other tests touch)
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    # the shell is named, not detected from the parent processes (here: pytest, not a shell)
    shown = subprocess.run(
        [str(script), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        env={**clean, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_STATESAGA_COMPLETE" in shown.stdout

    def complete(words: str) -> list[str]:
        environment = {
            **clean,
            "_STATESAGA_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        done = subprocess.run(
            [str(script)], capture_output=True, text=True, env=environment, cwd=tmp_path
        )
        return done.stdout.split()

    assert "list" in complete("statesaga li")
    assert "--saga" in complete("statesaga list --sa")


def test_the_store_finds_ids_by_their_start_on_every_backend(db: str) -> None:
    with Engine(db) as engine:
        ids = sorted(engine.start(sagas.Linear, Order(f"o-{n}")).id for n in range(3))
        assert engine.store.ids_starting_with(ids[0][:12]) == [ids[0]]
        assert engine.store.ids_starting_with("", limit=2) == ids[:2]
        assert engine.store.ids_starting_with("%") == []  # a LIKE wildcard is a plain character
        assert engine.store.ids_starting_with("zz") == []
