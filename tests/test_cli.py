"""The ``statesaga`` command, as a user types it, in a fresh directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statesaga.cli import app

CHECKOUT = "definitions.checkout:CompleteCart"
CART = json.dumps({"cart_id": "c-1", "lines": [{"sku": "mug", "quantity": 2, "unit_price": 1250}]})


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATESAGA_DATABASE_URL", raising=False)
    monkeypatch.delenv("STATESAGA_SAGAS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # wide tables: assertions see whole cells
    return CliRunner()


def rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM statesaga_instances").fetchone()[0])


def test_check_validates_and_describes_a_saga(cli: CliRunner) -> None:
    result = cli.invoke(app, ["check", CHECKOUT])
    assert result.exit_code == 0, result.output
    assert "complete-cart v1" in result.output
    assert "release_inventory" in result.output
    assert "ok: 8 states" in result.output


def test_check_of_something_that_is_not_a_saga_fails_clearly(cli: CliRunner) -> None:
    result = cli.invoke(app, ["check", "definitions.checkout:CartLine"])
    assert result.exit_code == 1
    assert "is not a Saga class" in result.output
    result = cli.invoke(app, ["check", "no.such.module"])
    assert result.exit_code == 1
    assert "cannot import 'no.such.module'" in result.output


def test_start_creates_the_default_database_and_show_prints_the_history(
    cli: CliRunner, tmp_path: Path
) -> None:
    started = cli.invoke(
        app, ["start", CHECKOUT, "--input", CART, "--key", "cart:complete:c-1", "--json"]
    )
    assert started.exit_code == 0, started.output
    run = json.loads(started.output)
    assert run["status"] == "completed"
    assert (tmp_path / "statesaga.db").exists()

    shown = cli.invoke(app, ["show", run["id"], "--saga", CHECKOUT])
    assert shown.exit_code == 0, shown.output
    for text in ("history", "validate_cart", "reserve_inventory", "complete_cart", "completed"):
        assert text in shown.output

    listed = cli.invoke(app, ["list", "--status", "completed", "--json"])
    assert [r["id"] for r in json.loads(listed.output)] == [run["id"]]


def test_start_with_malformed_input_fails_and_writes_nothing(
    cli: CliRunner, tmp_path: Path
) -> None:
    assert cli.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = cli.invoke(app, ["start", CHECKOUT, "--input", '{"cart_id": 5}'])
    assert result.exit_code == 1
    assert "InputError: input does not fit CompleteCartInput" in result.output
    assert "lines" in result.output
    assert rows(tmp_path / "statesaga.db") == 0
    result = cli.invoke(app, ["start", CHECKOUT, "--input", "{not json"])
    assert result.exit_code == 1
    assert "--input is not valid JSON" in result.output
    assert rows(tmp_path / "statesaga.db") == 0


def test_send_drives_a_waiting_run_by_key(cli: CliRunner) -> None:
    cart = json.loads(CART) | {"payment_method": "3ds-card"}
    started = cli.invoke(
        app, ["start", CHECKOUT, "-i", json.dumps(cart), "--key", "cart:complete:c-1", "--json"]
    )
    assert json.loads(started.output)["status"] == "waiting"
    sent = cli.invoke(
        app,
        [
            "send",
            "payment_succeeded",
            "--key",
            "cart:complete:c-1",
            "--saga",
            CHECKOUT,
            "--payload",
            '{"payment_id": "p-1"}',
            "--json",
        ],
    )
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["status"] == "completed"


def test_recover_and_cancel_need_and_use_the_sagas_code(cli: CliRunner) -> None:
    result = cli.invoke(app, ["recover"])
    assert result.exit_code == 1
    assert "--saga MODULE:ATTR" in result.output
    assert cli.invoke(app, ["recover", "--saga", CHECKOUT]).exit_code == 0

    cart = json.loads(CART) | {"payment_method": "3ds-card"}
    run = json.loads(cli.invoke(app, ["start", CHECKOUT, "-i", json.dumps(cart), "--json"]).output)
    cancelled = cli.invoke(app, ["cancel", run["id"], "--saga", CHECKOUT, "--json"])
    assert json.loads(cancelled.output)["status"] == "compensated"
    missing = cli.invoke(app, ["show", "nope"])
    assert missing.exit_code == 1
    assert "InstanceNotFound" in missing.output


def test_the_database_url_comes_from_the_environment(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESAGA_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    result = cli.invoke(app, ["start", CHECKOUT, "--input", CART])
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "other.db") == 1
    assert not (tmp_path / "statesaga.db").exists()


def test_the_demo_runs_every_checkout_scenario(cli: CliRunner) -> None:
    result = cli.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    for text in (
        "successful checkout",
        "payment declined",
        "empty cart",
        "3-D Secure",
        "EntityBusy",
    ):
        assert text in result.output


def test_the_demo_writes_the_checkout_diagram(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "The checkout diagram: checkout.mmd, checkout.svg" in result.output
    assert "stateDiagram-v2" in (tmp_path / "checkout.mmd").read_text()
    assert "<svg" in (tmp_path / "checkout.svg").read_text()
