"""``statesaga migrate``; the runs ``check --db`` and ``stats`` find on unregistered versions."""

from __future__ import annotations

import json

import pytest
from migration_sagas import Order, OrderV1, journal
from typer.testing import CliRunner

from statesaga import Engine
from statesaga.cli import app

V2 = "migration_sagas:OrderV2"
V3 = "migration_sagas:OrderV3"  # its context function refuses every run
DB = "sqlite:///statesaga.db"  # the command's default store, in the test's own directory


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.hold = False


def waiting(count: int) -> list[str]:
    with Engine(DB, sagas=[OrderV1]) as engine:
        return [engine.start(OrderV1, Order(f"o-{n}")).id for n in range(count)]


def dump() -> dict[str, list[tuple[object, ...]]]:
    with Engine(DB) as engine:
        return engine.store.dump()


def test_a_dry_run_prints_what_would_move_and_writes_nothing(cli: CliRunner) -> None:
    ids = waiting(2)
    before = dump()

    result = cli.invoke(app, ["migrate", "--saga", V2, "--from", "1", "--to", "2", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "order: version 1 \u2192 2 (dry run)" in result.output
    assert all(run_id in result.output for run_id in ids)
    assert "awaiting_confirmation" in result.output
    assert (
        "would move 2 run(s) of order from version 1 to 2; 0 skipped, 0 failed; nothing was written"
    ) in result.output
    assert dump() == before


def test_migrate_moves_the_runs_and_reports_them_as_json(cli: CliRunner) -> None:
    ids = waiting(2)

    result = cli.invoke(app, ["migrate", "--saga", V2, "--from", "1", "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["saga"], report["from_version"], report["to_version"]) == ("order", 1, 2)
    assert report["moved"] == 2
    assert {e["instance_id"] for e in report["entries"]} == set(ids)
    assert {e["outcome"] for e in report["entries"]} == {"moved"}
    shown = cli.invoke(app, ["show", ids[0], "--saga", V2])
    assert shown.exit_code == 0, shown.output
    assert "migrated" in shown.output
    assert "migrate v1 -> v2: upgrade" in shown.output


def test_runs_the_context_function_refuses_fail_the_command_and_stay(cli: CliRunner) -> None:
    waiting(1)
    before = dump()

    result = cli.invoke(app, ["migrate", "--saga", V3, "--from", "1"])

    assert result.exit_code == 1
    assert "ValueError: no note for this order" in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        "error: 1 run(s) could not be migrated and were left on version 1; fix the context "
        "function (the reasons are above) and run it again"
    )
    assert dump() == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "2"], "declares no migration from version 2"),
        (["--from", "1", "--to", "5"], "has no version 5 of 'order'"),
    ],
)
def test_a_migration_that_is_not_declared_fails_in_a_line(
    cli: CliRunner, arguments: list[str], message: str
) -> None:
    waiting(1)
    result = cli.invoke(app, ["migrate", "--saga", V2, *arguments])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_check_with_a_store_lists_open_runs_of_unregistered_versions(cli: CliRunner) -> None:
    waiting(2)

    result = cli.invoke(app, ["check", V2, "--db", DB])

    assert result.exit_code == 1
    assert "unregistered versions" in result.output
    assert "order v1 would have no registered version" in result.output
    assert "migrates runs of v1 (awaiting_payment \u2192 awaiting_confirmation)" in result.output
    # with version 1 registered beside it, or once the runs moved, nothing is left stranded
    assert cli.invoke(app, ["check", "migration_sagas", "--db", DB]).exit_code == 0
    assert cli.invoke(app, ["migrate", "--saga", V2, "--from", "1"]).exit_code == 0
    assert cli.invoke(app, ["check", V2, "--db", DB]).exit_code == 0


def test_stats_lists_open_runs_of_versions_the_workers_do_not_register(cli: CliRunner) -> None:
    waiting(3)

    result = cli.invoke(app, ["stats", "--registered", V2])
    assert result.exit_code == 0, result.output
    assert "unregistered versions" in result.output
    assert "statesaga migrate --saga MODULE:ATTR --from VERSION" in result.output

    as_json = cli.invoke(app, ["stats", "--json"], env={"STATESAGA_SAGAS": V2})
    assert json.loads(as_json.output)["unregistered"] == [
        {"saga": "order", "version": 1, "open_runs": 3}
    ]
    plain = cli.invoke(app, ["stats", "--json"])
    assert json.loads(plain.output)["unregistered"] == []
