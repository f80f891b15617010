"""The commands that start, steer and show runs, as a user types them, in a fresh directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import CHECKOUT, LINEAR, RESOURCES, cart, rows
from typer.testing import CliRunner

from definitions.checkout import Shop
from statesaga.cli import app


def test_check_validates_and_describes_a_saga(cli: CliRunner) -> None:
    result = cli.invoke(app, ["check", CHECKOUT])
    assert result.exit_code == 0, result.output
    assert "complete-cart v1" in result.output
    assert "release_inventory" in result.output
    assert "ok: 8 states" in result.output


def test_check_of_something_that_is_not_a_saga_fails_clearly(cli: CliRunner) -> None:
    result = cli.invoke(app, ["check", "definitions.checkout:Shop"])
    assert result.exit_code == 1
    assert "is not a Saga class" in result.output
    result = cli.invoke(app, ["check", "no.such.module"])
    assert result.exit_code == 1
    assert "cannot import 'no.such.module'" in result.output


def test_start_checks_out_a_cart_with_the_resources_given_and_show_prints_the_history(
    cli: CliRunner, shop: Shop
) -> None:
    started = cli.invoke(
        app,
        ["start", CHECKOUT, "-i", cart(shop), "--key", "k-1", *RESOURCES, "--json"],
    )
    assert started.exit_code == 0, started.output
    run = json.loads(started.output)
    assert run["status"] == "completed"
    assert shop.stock("mug").reserved == 2

    shown = cli.invoke(app, ["show", run["id"], "--saga", CHECKOUT])
    assert shown.exit_code == 0, shown.output
    for text in ("history", "validate_cart", "reserve_inventory", "complete_cart", "completed"):
        assert text in shown.output

    listed = cli.invoke(app, ["list", "--status", "completed", "--json"])
    assert [r["id"] for r in json.loads(listed.output)] == [run["id"]]


def test_a_run_without_its_resources_fails_visibly_and_retry_with_them_compensates(
    cli: CliRunner, shop: Shop
) -> None:
    started = cli.invoke(app, ["start", CHECKOUT, "--input", cart(shop), "--json"])
    assert started.exit_code == 0, started.output
    run = json.loads(started.output)
    # authorize needs the provider, and so does its compensation (undo_on_failure):
    # the run is left failed, with the reason and the fix, never silently dropped
    assert run["status"] == "failed"
    assert "asked for a PaymentProvider" in run["error"]["message"]
    assert "resources=[...]" in run["error"]["message"]
    assert shop.stock("mug").reserved == 2

    retried = cli.invoke(app, ["retry", run["id"], "--saga", CHECKOUT, *RESOURCES, "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output)["status"] == "compensated"
    assert shop.stock("mug").reserved == 0  # the reservation was released


def test_resources_that_are_not_a_list_fail_clearly(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["start", LINEAR, "-i", "{}", "--resources", "definitions.checkout:Shop"]
    )
    assert result.exit_code == 1
    assert "must be (or return) a list" in result.output
    result = cli.invoke(app, ["start", LINEAR, "-i", "{}", "--resources", "definitions.checkout"])
    assert result.exit_code == 1
    assert "names nothing" in result.output


def test_start_creates_the_default_database(cli: CliRunner, tmp_path: Path) -> None:
    started = cli.invoke(app, ["start", LINEAR, "--input", '{"order_id": "o-1"}', "--json"])
    assert started.exit_code == 0, started.output
    assert json.loads(started.output)["status"] == "completed"
    assert rows(tmp_path / "statesaga.db") == 1


def test_start_with_malformed_input_fails_and_writes_nothing(
    cli: CliRunner, tmp_path: Path
) -> None:
    assert cli.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = cli.invoke(app, ["start", CHECKOUT, "--input", '{"cart": "c-1"}'])
    assert result.exit_code == 1
    assert "InputError: input does not fit CompleteCartInput" in result.output
    assert "cart_id" in result.output
    assert rows(tmp_path / "statesaga.db") == 0
    result = cli.invoke(app, ["start", CHECKOUT, "--input", "{not json"])
    assert result.exit_code == 1
    assert "--input is not valid JSON" in result.output
    assert rows(tmp_path / "statesaga.db") == 0


def test_send_drives_a_waiting_run_by_key(cli: CliRunner, shop: Shop) -> None:
    started = cli.invoke(
        app,
        ["start", CHECKOUT, "-i", cart(shop, "card_3ds"), "--key", "k-1", *RESOURCES, "--json"],
    )
    run = json.loads(started.output)
    assert run["status"] == "waiting"
    payload = json.dumps({"provider_ref": run["data"]["provider_ref"]})
    send = ["send", "payment_succeeded", "--key", "k-1", "--saga", CHECKOUT, "--payload", payload]
    sent = cli.invoke(app, [*send, *RESOURCES, "--json"])
    assert sent.exit_code == 0, sent.output
    delivery = json.loads(sent.output)
    assert (delivery["status"], delivery["run"]["status"]) == ("accepted", "completed")
    assert [order.cart_id for order in shop.orders()] == [run["input"]["cart_id"]]


def test_recover_and_cancel_need_and_use_the_sagas_code(cli: CliRunner, shop: Shop) -> None:
    result = cli.invoke(app, ["recover"])
    assert result.exit_code == 1
    assert "--saga MODULE:ATTR" in result.output
    assert cli.invoke(app, ["recover", "--saga", CHECKOUT, *RESOURCES]).exit_code == 0

    started = cli.invoke(
        app, ["start", CHECKOUT, "-i", cart(shop, "card_3ds"), *RESOURCES, "--json"]
    )
    run = json.loads(started.output)
    cancelled = cli.invoke(app, ["cancel", run["id"], "--saga", CHECKOUT, *RESOURCES, "--json"])
    delivery = json.loads(cancelled.output)
    assert (delivery["status"], delivery["run"]["status"]) == ("accepted", "compensated")
    assert shop.stock("mug").reserved == 0
    missing = cli.invoke(app, ["show", "nope"])
    assert missing.exit_code == 1
    assert "InstanceNotFound" in missing.output


def test_the_database_url_comes_from_the_environment(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESAGA_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    result = cli.invoke(app, ["start", LINEAR, "--input", '{"order_id": "o-2"}'])
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "other.db") == 1
    assert not (tmp_path / "statesaga.db").exists()
