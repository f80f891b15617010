"""The checkout demo runs from a clone as ``python -m definitions.checkout.demo``, on the store
the ``statesaga`` command reads by default."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statesaga.cli import app

REPOSITORY = Path(__file__).resolve().parents[2]


def demo(directory: Path, *, path: str | None = None) -> str:
    """Run the demo in ``directory`` as the README says; its output."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "COLUMNS": "200"}
    environment.pop("STATESAGA_DATABASE_URL", None)
    if path is not None:
        environment["PATH"] = path
    done = subprocess.run(
        [sys.executable, "-m", "definitions.checkout.demo"],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_demo_runs_every_scenario_and_the_command_sees_its_runs(
    cli: CliRunner, tmp_path: Path
) -> None:
    printed = demo(tmp_path)
    output = " ".join(printed.split())
    for text in (
        "successful checkout",
        "existing order",
        "402 payment declined",
        "422 insufficient stock: 1 kettle left, 2 wanted",
        "3-D Secure: the webhook",
        "409 checkout already in progress",
    ):
        assert text in output, text
    assert "stateDiagram-v2" in (tmp_path / "checkout.mmd").read_text()
    # one default store: a plain `statesaga list` shows the demo's runs
    listed = json.loads(cli.invoke(app, ["list", "--json"]).output)
    assert len(listed) == 5
    assert {run["saga"] for run in listed} == {"complete-cart"}
    # the line it prints to inspect a run can be pasted as it is
    (line,) = [line.strip() for line in printed.splitlines() if "statesaga show " in line]
    assert line.split()[:2] == ["statesaga", "show"]
    shown = cli.invoke(app, line.split()[1:])
    assert shown.exit_code == 0, shown.output
    assert "complete-cart v1" in shown.output


def test_the_demo_draws_svg_with_graphviz_and_mermaid_without_it(tmp_path: Path) -> None:
    without = tmp_path / "no-dot"
    without.mkdir()
    output = demo(without, path=str(tmp_path / "empty-path"))
    assert "(no SVG:" in output
    assert "The checkout diagram: checkout.mmd" in output
    assert not (without / "checkout.svg").exists()
    if shutil.which("dot") is None:
        if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
            pytest.fail("Graphviz's dot is not installed; STATESAGA_REQUIRE_SERVICES=1")
        pytest.skip("Graphviz's dot is not installed")
    with_dot = tmp_path / "dot"
    with_dot.mkdir()
    assert "checkout.mmd, checkout.svg" in demo(with_dot)
    assert "<svg" in (with_dot / "checkout.svg").read_text()
