"""The diagrams in ``docs/`` are current, and the checkout drawing shows what a reviewer needs.

Redraw them after changing a saga or the renderers with::

    statesaga diagram definitions.checkout:CompleteCart -o docs/checkout.svg
    statesaga diagram definitions.checkout:CompleteCart -o docs/checkout.mmd
    STATESAGA_REDRAW_DIAGRAMS=1 python -m pytest tests/diagram/test_diagram_docs.py

(the last one redraws the change example of ``docs/reviewing.md`` from its own code).
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from definitions.checkout.saga import CompleteCart
from statesaga.cli import app
from statesaga.diagram import check_file, diff, draw, from_definition, to_mermaid

DOCS = Path(__file__).parents[2] / "docs"
CHECKOUT = "definitions.checkout:CompleteCart"
REDRAW = os.environ.get("STATESAGA_REDRAW_DIAGRAMS") == "1"
REQUIRE_SERVICES = os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("name", "format"), [("checkout.svg", "svg"), ("checkout.mmd", "mermaid")])
def test_the_committed_checkout_diagrams_are_current(name: str, format: str) -> None:
    # what CI runs: statesaga diagram definitions.checkout:CompleteCart -o docs/... --check
    result = CliRunner().invoke(
        app, ["diagram", CHECKOUT, "--format", format, "-o", str(DOCS / name), "--check"]
    )
    assert result.exit_code == 0, result.output


def test_the_checkout_svg_shows_every_state_step_compensation_and_the_legend() -> None:
    svg = ET.parse(DOCS / "checkout.svg").getroot()
    words = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    definition = CompleteCart.definition
    for state in definition.states:
        assert state in words
    for t in definition.transitions.values():
        # edges are named by transition, as history and metrics name them, the step beside it
        assert t.name in words
        if t.step is not None:
            assert t.step.function_name in words
            final = definition.states[t.target].final
            if t.step.compensation_name is not None and not final:
                assert f"{t.name}.undo" in words
                assert t.step.compensation_name in words
    # reopen_cart can never run (nothing follows complete), so no edge claims it does
    assert "reopen_cart" not in words
    assert words.count("void_payment") == 1  # one edge for the two ways into authorized
    for phrase in (
        "[payment_requires_action]",
        "[else]",
        "on payment_succeeded",
        "waits for payment_succeeded",
        "timeout 45 s",
        "no event in 45 s",
        "compensated",
        "legend",
        "deadline 1 min",
    ):
        assert phrase in words, phrase
    dashed = [p for p in svg.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert len(dashed) >= 4  # at least one per compensation


def reviewing_example() -> tuple[type, str]:
    """The changed checkout of docs/reviewing.md, run from its own code block."""
    page = (DOCS / "reviewing.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {"__name__": "reviewing_example"}
    exec(compile(code.group(1), "docs/reviewing.md", "exec"), namespace)
    return namespace["CompleteCart"], page


def test_the_change_example_of_the_reviewing_page_is_current() -> None:
    changed, page = reviewing_example()
    drawing = diff(CompleteCart, changed, since="main")
    block = re.search(r"```mermaid\n(.*?)```", page, re.DOTALL)
    assert block is not None
    mermaid = to_mermaid(drawing)
    svg_path = DOCS / "checkout-change.svg"
    if REDRAW:
        (DOCS / "reviewing.md").write_text(page.replace(block.group(1), mermaid))
        if shutil.which("dot") or REQUIRE_SERVICES:
            svg_path.write_bytes(draw(drawing, "svg"))
    assert block.group(1) == mermaid or REDRAW, "redraw with STATESAGA_REDRAW_DIAGRAMS=1"
    check_file(drawing, "svg", svg_path)
    assert "v1 \u2192 v2" in mermaid


def test_the_mermaid_chart_on_the_diagrams_page_is_the_committed_one() -> None:
    page = (DOCS / "diagrams.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", page, re.DOTALL)
    assert block is not None
    chart = to_mermaid(from_definition(CompleteCart))
    if REDRAW:
        (DOCS / "diagrams.md").write_text(page.replace(block.group(1), chart))
    assert block.group(1) == chart or REDRAW, "redraw with STATESAGA_REDRAW_DIAGRAMS=1"
    assert (DOCS / "checkout.mmd").read_text() == chart
