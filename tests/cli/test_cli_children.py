"""``statesaga show`` draws a run's family: its parent up to the root and its child runs."""

from __future__ import annotations

import json
from pathlib import Path

from child_sagas import BookHoliday, BookPackage, HolidayRequest, Holidays, PackageRequest
from typer.testing import CliRunner

from statesaga import Engine
from statesaga.cli import app


def holiday(path: Path) -> tuple[str, str]:
    """A holiday waiting for its package (the car awaits confirmation): (parent, child)."""
    with Engine(f"sqlite:///{path}", resources=[Holidays()]) as engine:
        run = engine.start(BookHoliday, HolidayRequest("t-1", car_needs_confirmation=True))
        (child,) = engine.children(run.id)
        return run.id, child.id


def test_show_draws_the_tree_from_the_parent_and_from_the_child(
    cli: CliRunner, tmp_path: Path
) -> None:
    parent, child = holiday(tmp_path / "sagas.db")
    db = ["--db", f"sqlite:///{tmp_path / 'sagas.db'}", "--saga", "child_sagas:BookHoliday"]

    for shown, other in ((parent, child), (child, parent)):
        result = cli.invoke(app, ["show", shown, *db])
        assert result.exit_code == 0, result.output
        assert "parent and child runs" in result.output
        tree = result.output.split("parent and child runs", 1)[1]
        lines = [line for line in tree.splitlines() if "book-" in line]
        assert "book-holiday v1" in lines[0]
        assert parent in lines[0]
        assert "book-package v1" in lines[1]
        assert child in lines[1]
        assert "awaiting_car" in lines[1]
        this = next(line for line in lines if "(this run)" in line)
        assert shown in this
        assert other not in this


def test_show_json_lists_the_children_and_the_parent(cli: CliRunner, tmp_path: Path) -> None:
    parent, child = holiday(tmp_path / "sagas.db")
    db = ["--db", f"sqlite:///{tmp_path / 'sagas.db'}", "--saga", "child_sagas:BookHoliday"]

    shown = json.loads(cli.invoke(app, ["show", parent, *db, "--json"]).output)
    assert shown["parent_id"] is None
    assert [(c["id"], c["saga"], c["status"]) for c in shown["children"]] == [
        (child, "book-package", "waiting")
    ]
    shown = json.loads(cli.invoke(app, ["show", child, *db, "--json"]).output)
    assert (shown["parent_id"], shown.get("children")) == (parent, None)


def test_show_of_a_run_without_family_draws_no_tree(cli: CliRunner, tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'sagas.db'}", resources=[Holidays()]) as engine:
        run = engine.start(BookPackage, PackageRequest("t-2"))
    db = ["--db", f"sqlite:///{tmp_path / 'sagas.db'}", "--saga", "child_sagas:BookPackage"]
    result = cli.invoke(app, ["show", run.id, *db])
    assert result.exit_code == 0, result.output
    assert "parent and child runs" not in result.output
