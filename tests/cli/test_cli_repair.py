"""``statesaga resolve`` and ``statesaga fork``, as an operator types them.

A checkout started without the payment provider (no ``--resources``) fails at
``authorize`` and cannot cancel the payment either: ``failed``, its mugs still
reserved. The operator then resolves it after a repair by hand, or forks it.
"""

from __future__ import annotations

import json

from cli_helpers import CHECKOUT, RESOURCES, cart
from typer.testing import CliRunner

from definitions.checkout import Shop
from statesaga.cli import app


def failed_checkout(cli: CliRunner, shop: Shop, *extra: str) -> str:
    started = cli.invoke(app, ["start", CHECKOUT, "-i", cart(shop), *extra, "--json"])
    assert started.exit_code == 0, started.output
    run = json.loads(started.output)
    assert run["status"] == "failed"
    return str(run["id"])


def error_of(result: object, code: int = 1) -> str:
    """The one- or two-line error a command printed (never a traceback)."""
    output: str = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    if code == 1:
        assert 1 <= len(output.strip().splitlines()) <= 2, output
    return " ".join(output.split())


def test_resolve_ends_a_failed_run_with_the_note_in_its_history(cli: CliRunner, shop: Shop) -> None:
    run_id = failed_checkout(cli, shop, "--key", "cart-1")
    resolved = cli.invoke(
        app,
        [
            "resolve",
            run_id[:10],
            "--as",
            "compensated",
            "--note",
            "released 2 mugs by hand",
            "--by",
            "alice",
            "--saga",
            CHECKOUT,
            "--json",
        ],
    )
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.output)["status"] == "compensated"

    shown = cli.invoke(app, ["show", run_id[:10], "--json"])
    last = json.loads(shown.output)["history"][-1]
    assert (last["kind"], last["note"], last["by"]) == (
        "resolved",
        "released 2 mugs by hand",
        "alice",
    )
    table = cli.invoke(app, ["show", run_id])
    assert "released 2 mugs by hand (by alice)" in table.output

    again = cli.invoke(
        app, ["resolve", run_id, "--as", "completed", "--note", "x", "--saga", CHECKOUT]
    )
    said = error_of(again)
    assert "ResolveNotAllowed" in said
    assert "only a failed run can be resolved (it has ended already)" in said


def test_resolve_needs_an_outcome_it_knows_and_a_note(cli: CliRunner, shop: Shop) -> None:
    run_id = failed_checkout(cli, shop)
    assert "'done' is not one of" in error_of(
        cli.invoke(app, ["resolve", run_id, "--as", "done", "--note", "x"]), code=2
    )
    assert "Missing option '--note'" in error_of(
        cli.invoke(app, ["resolve", run_id, "--as", "completed"]), code=2
    )
    blank = cli.invoke(
        app, ["resolve", run_id, "--as", "completed", "--note", " ", "--saga", CHECKOUT]
    )
    assert "a note is required" in error_of(blank)
    unregistered = cli.invoke(app, ["resolve", run_id, "--as", "completed", "--note", "ok"])
    assert "SagaNotRegistered" in error_of(unregistered)  # the rules need the saga's graph
    shown = cli.invoke(app, ["show", run_id, "--json"])
    assert json.loads(shown.output)["status"] == "failed"


def test_fork_restarts_a_failed_run_from_a_step_as_a_new_run(cli: CliRunner, shop: Shop) -> None:
    run_id = failed_checkout(cli, shop)
    forked = cli.invoke(
        app,
        ["fork", run_id[:12], "--from-step", "authorize", "--saga", CHECKOUT, *RESOURCES, "--json"],
    )
    assert forked.exit_code == 0, forked.output
    fork = json.loads(forked.output)
    assert fork["status"] == "completed"
    assert fork["id"] != run_id

    shown = json.loads(cli.invoke(app, ["show", fork["id"], "--json"]).output)
    first = shown["history"][0]
    assert (first["kind"], first["transition"], first["link"]) == (
        "forked_from",
        "authorize",
        run_id,
    )
    original = json.loads(cli.invoke(app, ["show", run_id, "--json"]).output)
    assert original["history"][-1]["link"] == fork["id"]


def test_fork_refusals_name_the_fix(cli: CliRunner, shop: Shop) -> None:
    keyed = failed_checkout(cli, shop, "--key", "cart-1")
    held = cli.invoke(app, ["fork", keyed, "--from-step", "reserve", "--saga", CHECKOUT])
    said = error_of(held)
    assert "ForkNotAllowed" in said
    assert "holds its entity key" in said
    assert "statesaga resolve" in said

    free = failed_checkout(cli, shop)
    unknown = cli.invoke(app, ["fork", free, "--from-step", "ship", "--saga", CHECKOUT])
    assert "fork from one it did: validate, reserve, authorize" in error_of(unknown)
    nobody = cli.invoke(app, ["fork", "ffff", "--from-step", "reserve", "--saga", CHECKOUT])
    assert "no run has an id starting with 'ffff'" in error_of(nobody)
