"""The trip booking drawn: a guard on an event edge, a pivot's void as a dashed edge
back along the pivot, a timeout computed per run. Both formats, checked by the real
renderers (mermaid-cli on Chromium, Graphviz's dot)."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from trip_sagas import BookTrip, book_hotel, cancel_hotel

from statesaga import State
from statesaga.diagram import EdgeKind, diff, from_definition, to_dot, to_mermaid
from statesaga.diagram.mermaid import mermaid_edges
from statesaga.diagram.model import Change, drawn_nodes

SVG = "{http://www.w3.org/2000/svg}"


class FixedWindow(BookTrip):
    name = "book-trip"
    version = 2
    awaiting_supplier = State(timeout=3600)
    book = BookTrip.new.to(awaiting_supplier).run(
        book_hotel, undo=cancel_hotel, undo_on_failure=True
    )
    confirm = awaiting_supplier.to(BookTrip.confirmed).on(BookTrip.supplier_confirmed)


def words(svg: ET.Element) -> str:
    return " ".join(" ".join(svg.itertext()).split())


def test_the_model_holds_the_guard_the_void_and_the_computed_timeout() -> None:
    drawing = from_definition(BookTrip)

    confirm = drawing.edge("confirm")
    assert (confirm.kind, confirm.guard, confirm.event) == (
        EdgeKind.EVENT,
        "for_this_trip",
        "supplier_confirmed",
    )
    void = drawing.edge("charge.undo")
    assert void.kind is EdgeKind.COMPENSATION
    assert void.void
    assert (void.step, void.undoes) == ("void_charge", "charge")
    assert (void.source, void.target) == ("charged", "awaiting_supplier")
    waiting = drawing.node("awaiting_supplier")
    assert (waiting.timeout, waiting.timeout_of) == (None, "confirmation_window")
    timeout = drawing.edge("awaiting_supplier.timeout")
    assert timeout.timeout_of == "confirmation_window"


def test_both_formats_label_the_new_parts() -> None:
    drawing = from_definition(BookTrip)
    mermaid, dot = to_mermaid(drawing), to_dot(drawing)

    for text in (mermaid, dot):
        assert "[for_this_trip]" in text
        assert "timeout confirmation_window(ctx)" in text
        assert "no event in confirmation_window(ctx)" in text
        assert "void_charge" in text
    assert "void#58; only if charge fails" in mermaid  # a colon, as Mermaid's entity
    assert "void: only if charge fails" in dot


def test_a_diff_names_a_timeout_that_became_fixed() -> None:
    changed = diff(BookTrip, FixedWindow)

    node = changed.node("awaiting_supplier")
    assert node.change is Change.CHANGED
    assert any("timeout computed by" in note for note in node.notes), node.notes
    assert changed.edge("charge.undo").change is None  # the void itself did not change


@pytest.fixture(scope="module")
def mermaid_svg(
    mermaid_cli: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> ET.Element:
    mmdc, config = mermaid_cli
    folder = tmp_path_factory.mktemp("trip")
    source = folder / "trip.mmd"
    source.write_text(to_mermaid(from_definition(BookTrip)))
    result = subprocess.run(
        [mmdc, "-p", config, "-i", str(source), "-o", str(folder / "trip.svg"), "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return ET.parse(Path(folder / "trip.svg")).getroot()


def test_mermaid_cli_draws_the_trip_with_its_void_dashed(mermaid_svg: ET.Element) -> None:
    drawing = from_definition(BookTrip)
    text = words(mermaid_svg)

    assert "Syntax error" not in text
    for node in drawn_nodes(drawing):
        assert node.label in text, node.label
    for label in ("[for_this_trip]", "confirmation_window(ctx)", "void: only if charge fails"):
        assert label in text, label
    edges = mermaid_edges(drawing)
    drawn = [p for p in mermaid_svg.iter(f"{SVG}path") if p.get("data-edge") == "true"]
    assert len(drawn) == len(edges)
    number = next(n for n, e in enumerate(edges) if e.id == "charge.undo")
    style = " ".join(s.text or "" for s in mermaid_svg.iter(f"{SVG}style"))
    rule = re.search(rf'path\[data-id="?edge{number}"?\][^{{]*\{{([^}}]*)\}}', style)
    assert rule is not None
    assert "stroke-dasharray" in rule.group(1)


def test_dot_draws_the_trip(dot: str) -> None:
    drawing = from_definition(BookTrip)
    result = subprocess.run(
        [dot, "-Tsvg"],
        input=to_dot(drawing),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    svg = ET.fromstring(result.stdout)
    text = words(svg)
    for label in ("[for_this_trip]", "confirmation_window(ctx)", "void: only if charge fails"):
        assert label in text, label
    edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == len(drawing.edges) + 1  # and the start marker's
    void = next(g for g in edges if "void_charge" in words(g))
    path = next(void.iter(f"{SVG}path"))
    assert path.get("stroke-dasharray") is not None  # dashed, like every compensation
