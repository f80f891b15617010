"""``statesaga diagram``, as a user types it, in a fresh directory."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from checkout_runs import open_shop
from typer.testing import CliRunner

from statesaga.cli import app

CHECKOUT = "definitions.checkout:CompleteCart"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATESAGA_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_it_prints_dot_by_default_and_mermaid_when_asked(cli: CliRunner) -> None:
    dot = cli.invoke(app, ["diagram", CHECKOUT])
    assert dot.exit_code == 0, dot.output
    assert dot.stdout.startswith('digraph "complete-cart" {')
    mermaid = cli.invoke(app, ["diagram", CHECKOUT, "--format", "mermaid"])
    assert mermaid.exit_code == 0, mermaid.output
    assert "stateDiagram-v2" in mermaid.stdout.splitlines()


@needs_dot
@pytest.mark.parametrize(
    ("name", "magic"),
    [
        ("checkout.svg", b"<?xml"),
        ("checkout.png", b"\x89PNG"),
        ("checkout.pdf", b"%PDF"),
        ("checkout.mmd", b"---\ntitle"),
        ("checkout.gv", b"digraph"),
    ],
)
def test_the_output_file_suffix_picks_the_format(
    cli: CliRunner, tmp_path: Path, name: str, magic: bytes
) -> None:
    result = cli.invoke(app, ["diagram", CHECKOUT, "-o", name])
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert f"wrote {name}" in result.output


@needs_dot
def test_svg_to_a_pipe_is_written_as_bytes(cli: CliRunner) -> None:
    result = cli.invoke(app, ["diagram", CHECKOUT, "--format", "svg"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"<?xml")


@pytest.mark.parametrize("format", ["svg", "mermaid", "dot"])
def test_check_passes_on_a_current_file_and_fails_on_a_stale_one(
    cli: CliRunner, tmp_path: Path, format: str
) -> None:
    if format == "svg" and shutil.which("dot") is None:
        pytest.skip("drawing the SVG to check needs Graphviz's dot")
    target = tmp_path / f"checkout.{format}"
    assert cli.invoke(app, ["diagram", CHECKOUT, "-f", format, "-o", str(target)]).exit_code == 0
    current = cli.invoke(app, ["diagram", CHECKOUT, "-f", format, "-o", str(target), "--check"])
    assert current.exit_code == 0, current.output
    assert "is up to date" in current.output
    text = target.read_text()
    # a drawing of another version of the saga: other words, and (for SVG) another fingerprint
    stale_text = re.sub(r"statesaga diagram [0-9a-f]{16}", "statesaga diagram " + "0" * 16, text)
    target.write_text(stale_text.replace("release_inventory", "release_stock"))
    stale = cli.invoke(app, ["diagram", CHECKOUT, "-f", format, "-o", str(target), "--check"])
    assert stale.exit_code == 1
    assert "out of date" in stale.output
    assert "redraw it with" in stale.output


def test_check_explains_what_it_cannot_do(cli: CliRunner) -> None:
    missing = cli.invoke(app, ["diagram", CHECKOUT, "-o", "nowhere.svg", "--check"])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
    Path("foreign.svg").write_text("<svg/>")
    foreign = cli.invoke(app, ["diagram", CHECKOUT, "-o", "foreign.svg", "--check"])
    assert "not drawn by statesaga diagram" in foreign.output
    Path("x.png").write_bytes(b"\x89PNG")
    png = cli.invoke(app, ["diagram", CHECKOUT, "-o", "x.png", "--check"])
    assert png.exit_code == 1
    assert "commit diagrams as SVG, DOT, Mermaid or Markdown" in " ".join(png.output.split())
    no_file = cli.invoke(app, ["diagram", CHECKOUT, "--check"])
    assert no_file.exit_code == 1
    assert "--check needs -o FILE" in no_file.output


def test_instance_overlays_a_stored_run(cli: CliRunner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    with open_shop(db) as checkouts:
        run = checkouts.complete("card_declined")
    result = cli.invoke(
        app, ["diagram", CHECKOUT, "--instance", run.id, "--db", db, "-f", "mermaid"]
    )
    assert result.exit_code == 0, result.output
    assert f"run {run.id}" in result.stdout
    assert "reserved --> authorizing : \u2717 authorize<br>authorize_payment" in result.stdout
    assert "class outcome_compensated current" in result.stdout


def test_bad_requests_fail_with_one_clear_line(cli: CliRunner, tmp_path: Path) -> None:
    cases = {
        ("diagram", CHECKOUT, "--format", "jpeg"): "unknown format 'jpeg'",
        ("diagram", CHECKOUT, "--instance", "x", "--against", "HEAD"): "pass one",
        ("diagram", "sagas"): "defines several sagas",
        ("diagram", CHECKOUT, "--instance", "nope", "--db", f"sqlite:///{tmp_path / 'e.db'}"): (
            "there is no store at"
        ),
        ("diagram", "definitions.checkout:CompleteCartInput"): "is not a Saga class",
    }
    for args, message in cases.items():
        result = cli.invoke(app, list(args))
        assert result.exit_code == 1, args
        assert message in " ".join(result.output.split()), (args, result.output)


def test_a_missing_extra_is_named_in_full(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if the extra were not installed
    result = cli.invoke(app, ["diagram", CHECKOUT])
    assert result.exit_code == 1
    assert "pip install 'statesaga[diagrams]'" in " ".join(result.output.split())
    mermaid = cli.invoke(app, ["diagram", CHECKOUT, "--format", "mermaid"])
    assert mermaid.exit_code == 0, mermaid.output


def test_a_stale_overlay_or_diff_says_how_to_redraw_it(cli: CliRunner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    with open_shop(db) as checkouts:
        run = checkouts.complete("card_ok")
    args = ["diagram", CHECKOUT, "--instance", run.id, "--db", db, "-o", "run.mmd"]
    Path("run.mmd").write_text("stale\n")
    result = cli.invoke(app, [*args, "--check"])
    assert result.exit_code == 1
    assert f"redraw it with: statesaga diagram {CHECKOUT} --instance {run.id} --db {db}" in (
        " ".join(result.output.split())
    )
    assert cli.invoke(app, args).exit_code == 0
    assert cli.invoke(app, [*args, "--check"]).exit_code == 0
