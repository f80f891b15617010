"""A child step drawn: its edge names the child saga it starts (and the function making
its input), its compensation is a dashed edge back. Both formats, checked by the real
renderers (mermaid-cli on Chromium, Graphviz's dot), the definition and a run's overlay."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from child_sagas import BookHoliday, HolidayRequest, Holidays

from statesaga import Engine
from statesaga.diagram import Diagram, EdgeKind, from_definition, overlay, to_dot, to_mermaid
from statesaga.diagram.mermaid import mermaid_edges
from statesaga.diagram.model import Trace, drawn_nodes

SVG = "{http://www.w3.org/2000/svg}"
CHILD = "child saga book-package v1"


def words(svg: ET.Element) -> str:
    return " ".join(" ".join(svg.itertext()).split())


def waiting_run() -> Diagram:
    """The overlay of a holiday waiting for its package (the car awaits confirmation)."""
    with Engine("sqlite://", resources=[Holidays()]) as engine:
        run = engine.start(BookHoliday, HolidayRequest("t-1", car_needs_confirmation=True))
        return overlay(from_definition(BookHoliday), engine.get(run.id))


def test_the_model_holds_the_child_saga_on_the_step_edge() -> None:
    drawing = from_definition(BookHoliday)

    edge = drawing.edge("book_package")
    assert (edge.kind, edge.child, edge.step) == (
        EdgeKind.STEP,
        "book-package v1",
        "package_request",
    )
    undo = drawing.edge("book_package.undo")
    assert (undo.kind, undo.step) == (EdgeKind.COMPENSATION, "undo child book-package")
    assert drawing.edge("charge").child is None


def test_both_formats_label_the_child_link() -> None:
    drawing = from_definition(BookHoliday)
    for text in (to_mermaid(drawing), to_dot(drawing)):
        assert CHILD in text
        assert "undo child book-package" in text


def test_an_overlay_marks_where_a_run_waits_for_its_child() -> None:
    drawing = waiting_run()
    assert drawing.node("new").trace is Trace.CURRENT


@pytest.fixture(scope="module")
def mermaid_svgs(
    mermaid_cli: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> list[ET.Element]:
    mmdc, config = mermaid_cli
    folder = tmp_path_factory.mktemp("children")
    drawn = []
    for name, drawing in (("definition", from_definition(BookHoliday)), ("run", waiting_run())):
        source = folder / f"{name}.mmd"
        source.write_text(to_mermaid(drawing))
        result = subprocess.run(
            [mmdc, "-p", config, "-i", str(source), "-o", str(folder / f"{name}.svg"), "-q"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        drawn.append(ET.parse(Path(folder / f"{name}.svg")).getroot())
    return drawn


def test_mermaid_cli_draws_the_child_link(mermaid_svgs: list[ET.Element]) -> None:
    drawing = from_definition(BookHoliday)
    for svg in mermaid_svgs:
        text = words(svg)
        assert "Syntax error" not in text
        for node in drawn_nodes(drawing):
            assert node.label in text, node.label
        assert CHILD in text
        drawn = [p for p in svg.iter(f"{SVG}path") if p.get("data-edge") == "true"]
        assert len(drawn) == len(mermaid_edges(drawing))


def test_dot_draws_the_child_link(dot: str) -> None:
    for drawing in (from_definition(BookHoliday), waiting_run()):
        result = subprocess.run(
            [dot, "-Tsvg"], input=to_dot(drawing), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        svg = ET.fromstring(result.stdout)
        edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
        child = [g for g in edges if CHILD in words(g)]
        assert len(child) == 1
        undo = next(g for g in edges if "undo child book-package" in words(g))
        assert next(undo.iter(f"{SVG}path")).get("stroke-dasharray") is not None
