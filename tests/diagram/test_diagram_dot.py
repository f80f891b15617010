"""DOT output: accepted by Graphviz's ``dot``, complete, and drawn in the visual language."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from checkout_runs import open_shop

from definitions.checkout.saga import CompleteCart, CompleteCartInput
from statesaga import Saga, State, StepContext
from statesaga.diagram import (
    Diagram,
    DiagramError,
    diff,
    from_definition,
    overlay,
    render,
    to_dot,
)
from statesaga.diagram.dot import fingerprint, fingerprint_of

REQUIRE_SERVICES = os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1"


def accepted(dot: str, source: str) -> str:
    """Run ``dot`` on the source; it must exit 0 without a warning. Returns the SVG."""
    result = subprocess.run(
        [dot, "-Tsvg"], input=source, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def drawings() -> dict[str, Diagram]:
    with open_shop() as checkouts:
        declined = checkouts.complete("card_declined")
        waiting = checkouts.complete("card_3ds")
    base = from_definition(CompleteCart)
    return {
        "definition": base,
        "declined run": overlay(base, declined),
        "waiting run": overlay(base, waiting),
        "diff": diff(Shorter, CompleteCart, since="HEAD~1"),
    }


@attrs.frozen
class Data:
    total: int = 0


def check_cart(ctx: StepContext[CompleteCartInput, Data]) -> None: ...


class Shorter(Saga[CompleteCartInput, Data]):
    """The checkout as it might have started: validate, then done."""

    name = "complete-cart"
    new = State(initial=True)
    validated = State()
    completed = State(final=True)
    validate = new.to(validated).run(check_cart, read_only=True)
    complete = validated.to(completed).run(check_cart, pivot=True)


@pytest.mark.parametrize("name", ["definition", "declined run", "waiting run", "diff"])
def test_dot_accepts_every_kind_of_diagram(dot: str, name: str) -> None:
    svg = accepted(dot, to_dot(drawings()[name]))
    assert svg.lstrip().startswith("<?xml")


def test_the_checkout_dot_holds_every_state_step_and_compensation() -> None:
    text = to_dot(from_definition(CompleteCart))
    definition = CompleteCart.definition
    for state in definition.states:
        assert re.search(rf"^\s*{state} \[label=<<b>{state}</b>", text, re.MULTILINE), state
    for t in definition.transitions.values():
        assert f"{t.source} -> {t.target} [" in text
        if t.step is not None:
            assert t.step.function_name in text
            final = definition.states[t.target].final
            if t.step.compensation_name is not None and not final:
                assert f"{t.name}.undo" in text
                assert t.step.compensation_name in text


def test_the_visual_language_in_dot_attributes() -> None:
    text = to_dot(from_definition(CompleteCart))
    lines = text.splitlines()

    def edge(source: str, target: str, marker: str) -> str:
        return next(x for x in lines if f"{source} -> {target} [" in x and marker in x)

    forward = edge("validated", "reserved", "reserve_inventory")
    undo = edge("validated", "reserved", "reserve.undo")
    assert "style=" not in forward
    assert "dir=back" in undo
    assert "style=dashed" in undo
    assert "<i>[payment_requires_action]</i>" in edge("authorizing", "awaiting_payment", "")
    # a timeout that compensates is drawn beside its state, to where the first undo leaves
    timeout = edge("authorizing", "awaiting_payment", "no event in 45 s")
    assert "style=dotted" in timeout
    assert "dir=back" in timeout
    assert "arrowhead=empty" in edge("awaiting_payment", "authorized", "payment_succeeded")
    # paths into an outcome are double lines, told apart from dashed undos in greyscale too
    assert 'color="#b26a00:invis:#b26a00"' in edge("new", '"(compensated)"', "")
    fills = set()
    for name in ("completed", '"(compensated)"', "ordered"):
        declared = next(x for x in lines if x.strip().startswith(f"{name} [label="))
        fills.add(re.findall(r'fillcolor="(#[0-9a-f]+)"', declared)[0])
    assert len(fills) == 3
    assert '"(failed)"' not in text  # nothing in this saga leads to it
    assert "waits for payment_succeeded" in text
    assert "legend" in text
    assert "deadline 1 min" in text


def test_the_fingerprint_follows_what_is_drawn_and_survives_rendering(dot: str) -> None:
    drawing = from_definition(CompleteCart)
    first = to_dot(drawing)
    assert to_dot(from_definition(CompleteCart)) == first
    assert fingerprint_of(first) == fingerprint(drawing)
    assert fingerprint(diff(CompleteCart, CompleteCart)) != fingerprint(drawing)
    assert fingerprint(from_definition(Shorter)) != fingerprint(drawing)
    svg = render(drawing, "svg").decode()
    assert fingerprint_of(svg) == fingerprint(drawing)
    assert fingerprint_of("digraph g {}") is None


@pytest.mark.parametrize(("format", "magic"), [("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_render_draws_png_and_pdf(dot: str, format: str, magic: bytes) -> None:
    assert render(from_definition(CompleteCart), format).startswith(magic)


def test_without_dot_the_error_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DiagramError, match="apt-get install graphviz"):
        render(from_definition(CompleteCart), "svg")


def test_without_the_graphviz_package_the_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['graphviz'] = None\n"
        "from statesaga.diagram import from_definition, to_dot, DiagramError\n"
        "from definitions.checkout.saga import CompleteCart\n"
        "try:\n"
        "    to_dot(from_definition(CompleteCart))\n"
        "except DiagramError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'statesaga[diagrams]'" in result.stdout


def test_render_refuses_a_text_format() -> None:
    with pytest.raises(DiagramError, match="svg, png, pdf"):
        render(from_definition(CompleteCart), "mermaid")
