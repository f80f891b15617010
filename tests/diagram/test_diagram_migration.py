"""A diff of two versions draws the newer one's declared migration: where the old runs move.

Drawn by the real renderers: Mermaid through mermaid-cli on Chromium, DOT through ``dot``.
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from migration_sagas import OrderV1, OrderV2

from statesaga.diagram import EdgeKind, diff, to_dot, to_mermaid
from statesaga.diagram.mermaid import mermaid_edges
from statesaga.diagram.model import drawn_nodes

SVG = "{http://www.w3.org/2000/svg}"


def words(svg: ET.Element) -> str:
    return " ".join(" ".join(svg.itertext()).split())


def test_the_diff_holds_one_edge_per_moved_state_and_a_note() -> None:
    drawing = diff(OrderV1, OrderV2)

    moves = [e for e in drawing.edges if e.kind is EdgeKind.MIGRATION]
    assert [(e.source, e.target, e.notes) for e in moves] == [
        ("awaiting_payment", "awaiting_confirmation", ("v1 runs move here",))
    ]
    assert drawing.notes[-1] == (
        "v1 runs migrate awaiting_payment \u2192 awaiting_confirmation (context: upgrade)"
    )
    # the same two versions without a declared migration draw no moves
    assert not [e for e in diff(OrderV2, OrderV1).edges if e.kind is EdgeKind.MIGRATION]


def test_mermaid_writes_the_move_as_a_labelled_dashed_edge() -> None:
    text = to_mermaid(diff(OrderV1, OrderV2))
    assert "    awaiting_payment --> awaiting_confirmation : v1 runs move here" in text
    assert "stroke:rgb(0,131,143) !important;stroke-width:3.5px !important" in text
    assert "stroke-dasharray:4 3" in text


def test_mermaid_cli_draws_the_migration(mermaid_cli: tuple[str, str], tmp_path: Path) -> None:
    mmdc, config = mermaid_cli
    drawing = diff(OrderV1, OrderV2)
    source = tmp_path / "migration.mmd"
    source.write_text(to_mermaid(drawing))
    target = tmp_path / "migration.svg"
    result = subprocess.run(
        [mmdc, "-p", config, "-i", str(source), "-o", str(target), "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    svg = ET.parse(target).getroot()
    text = words(svg)
    assert "Syntax error" not in text
    assert "v1 runs move here" in text
    for node in drawn_nodes(drawing):
        assert node.label in text, node.label
    drawn = sum(1 for p in svg.iter(f"{SVG}path") if p.get("data-edge") == "true")
    assert drawn == len(mermaid_edges(drawing))
    style = " ".join(s.text or "" for s in svg.iter(f"{SVG}style"))
    assert re.search(r"rgb\(0,\s*131,\s*143\)", style)  # the move's teal, as Chromium keeps it


def test_dot_draws_the_migration_dashed_with_a_legend_entry(dot: str) -> None:
    drawing = diff(OrderV1, OrderV2)
    source = to_dot(drawing)
    assert "migration: where old runs move" in source
    result = subprocess.run(
        [dot, "-Tsvg"], input=source, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    svg = ET.fromstring(result.stdout)
    text = words(svg)
    assert "v1 runs move here" in text
    assert "v1 runs migrate awaiting_payment" in text
    edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) == len(drawing.edges) + 1  # and the start marker's
    moved = [
        g
        for g in edges
        if "awaiting_payment" in words(g) or "v1 runs move here" in words(g)
        if any(p.get("stroke") == "#00838f" for p in g.iter(f"{SVG}path"))
    ]
    assert moved
    assert any(p.get("stroke-dasharray") for g in moved for p in g.iter(f"{SVG}path"))
