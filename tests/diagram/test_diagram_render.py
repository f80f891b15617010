"""Every chart, committed or generated, drawn by the real renderers, and the SVG checked.

Mermaid charts go through mermaid-cli on Chromium (one run draws them all from
one Markdown file), DOT through Graphviz's ``dot``. For each drawing: it is
drawn without an error, every state's name is in the SVG's text, the SVG has
one edge per transition written, and the layout runs top to bottom from the
start marker.
"""

from __future__ import annotations

import functools
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from checkout_runs import open_shop
from child_sagas import BookHoliday
from parallel_trip import Agency, BookTripTogether, SoldOut, TripOrder
from test_diagram_docs import reviewing_example

from definitions.checkout.saga import CompleteCart
from statesaga import Engine, NonRetryableError, Saga, State, StepContext
from statesaga.diagram import (
    Diagram,
    EdgeKind,
    diff,
    from_definition,
    markdown_section,
    overlay,
    to_dot,
    to_mermaid,
)
from statesaga.diagram.mermaid import mermaid_edges
from statesaga.diagram.model import drawn_nodes

DOCS = Path(__file__).parents[2] / "docs"
SVG = "{http://www.w3.org/2000/svg}"


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    n: int = 0


Ctx = StepContext[In, Data]


class Boom(NonRetryableError):
    pass


def make_awkward() -> type[Saga[In, Data]]:
    """Names and an error message holding what Mermaid's lexer and sanitiser would read."""

    def act(ctx: Ctx) -> None:
        raise Boom('bad: input; #x; %% <b>direction TB</b> "quoted" `tick` {brace}')

    def undo(ctx: Ctx) -> None:
        return None

    class Awkward(Saga[In, Data]):
        name = "awkward: saga; #1"
        state = State(initial=True)
        default_place = State()
        note = State()
        restyled = State()
        étape = State(timeout=5)
        end = State(final=True)
        go = state.to(default_place).run(act, undo=undo)
        more = default_place.to(note).run(act, undo=undo)
        wait = note.to(restyled).run(act, read_only=True)
        hold = restyled.to(étape).run(act, read_only=True)
        arrive = étape.to(end).on("direction_TB_arrived")

    return Awkward


@functools.cache
def drawings() -> dict[str, Diagram]:
    """The charts the tests generate: the checkout's definition, runs on it, a diff."""
    checkout = from_definition(CompleteCart)
    with open_shop() as checkouts:
        declined = checkouts.complete("card_declined")
        waiting = checkouts.complete("card_3ds")
    changed, _ = reviewing_example()
    awkward = make_awkward()
    with Engine("sqlite://") as engine:
        failed_run = engine.get(engine.start(awkward, {}).id)
    agency = Agency()
    agency.failures["book_hotel"] = [SoldOut("no rooms left")]
    with Engine("sqlite://", resources=[agency]) as engine:
        parallel_run = engine.get(engine.start(BookTripTogether, TripOrder("t-1")).id)
    parallel = from_definition(BookTripTogether)
    return {
        "definition": checkout,
        "declined": overlay(checkout, declined),
        "waiting": overlay(checkout, waiting),
        "diff": diff(CompleteCart, changed, since="main"),
        "awkward": from_definition(awkward),
        "awkward-run": overlay(from_definition(awkward), failed_run),
        "parallel": parallel,
        "parallel-run": overlay(parallel, parallel_run),
        "child saga": from_definition(BookHoliday),
    }


def words(svg: ET.Element) -> str:
    """All text of an SVG, HTML labels in foreignObjects too, one space apart."""
    return " ".join(" ".join(svg.itertext()).split())


# -- Mermaid, through mermaid-cli ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mermaid_svgs(
    mermaid_cli: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], ET.Element]:
    """Draw every chart in one mermaid-cli run; returns the SVG of a chart by name."""
    mmdc, config = mermaid_cli
    charts = {name: to_mermaid(drawing) for name, drawing in drawings().items()}
    charts["committed checkout.mmd"] = (DOCS / "checkout.mmd").read_text()
    for page in ("reviewing.md", "diagrams.md"):
        text = (DOCS / page).read_text()
        for number, block in enumerate(re.findall(r"```mermaid\n(.*?)```", text, re.DOTALL), 1):
            charts[f"{page} block {number}"] = block
    charts["markdown section"] = re.findall(
        r"```mermaid\n(.*?)```", markdown_section(drawings()["diff"]), re.DOTALL
    )[0]
    folder = tmp_path_factory.mktemp("mermaid")
    source = folder / "charts.md"
    source.write_text("".join(f"```mermaid\n{text}```\n\n" for text in charts.values()))
    result = subprocess.run(
        [mmdc, "-p", config, "-i", str(source), "-o", str(folder / "drawn.md"), "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    svgs = {name: folder / f"drawn-{n}.svg" for n, name in enumerate(charts, 1)}

    def svg(name: str) -> ET.Element:
        return ET.parse(svgs[name]).getroot()

    return svg


def mermaid_edge_count(svg: ET.Element) -> int:
    return sum(1 for p in svg.iter(f"{SVG}path") if p.get("data-edge") == "true")


def centre_y(svg: ET.Element, node_id: str) -> float:
    for group in svg.iter(f"{SVG}g"):
        if re.fullmatch(rf"[\w-]*state-{re.escape(node_id)}-\d+", group.get("id", "")):
            found = re.search(r"translate\(([-\d.]+),\s*([-\d.]+)\)", group.get("transform", ""))
            assert found is not None
            return float(found.group(2))
    raise AssertionError(f"no node {node_id} in the SVG")


DRAWN = ["definition", "declined", "waiting", "diff", "awkward", "awkward-run"]
DRAWN += ["parallel", "parallel-run"]


@pytest.mark.parametrize("name", DRAWN)
def test_mermaid_draws_every_state_by_name_and_every_edge(
    mermaid_svgs: Callable[[str], ET.Element], name: str
) -> None:
    drawing = drawings()[name]
    svg = mermaid_svgs(name)
    text = words(svg)
    assert "Syntax error" not in text
    for node in drawn_nodes(drawing):
        assert node.label in text, node.label
    assert mermaid_edge_count(svg) == len(mermaid_edges(drawing))


def test_mermaid_lays_the_checkout_out_from_the_start_marker_down(
    mermaid_svgs: Callable[[str], ET.Element],
) -> None:
    svg = mermaid_svgs("definition")
    path = ["root_start", "new", "validated", "reserved", "authorizing", "authorized", "ordered"]
    heights = [centre_y(svg, node) for node in [*path, "completed"]]
    assert heights == sorted(heights)
    assert heights[0] < heights[1]


def test_mermaid_styles_compensations_apart_and_marks_the_run_and_the_diff(
    mermaid_svgs: Callable[[str], ET.Element],
) -> None:
    def rules(name: str) -> str:
        # as Chromium writes it back ("rgb(230, 81, 0)", "7,4"), with the spaces and commas
        # between numbers made single spaces
        text = " ".join(s.text or "" for s in mermaid_svgs(name).iter(f"{SVG}style"))
        return re.sub(r"(?<=\d)(?:, *| +)(?=\d)", " ", text)

    edges = mermaid_edges(drawings()["definition"])
    undo = [n for n, e in enumerate(edges) if e.kind is EdgeKind.COMPENSATION]
    style = rules("definition")

    def rule(number: int) -> str:
        found = re.search(rf'path\[data-id="?edge{number}"?\][^{{]*\{{([^}}]*)\}}', style)
        return "" if found is None else found.group(1)

    assert undo
    for number in undo:
        assert "stroke-dasharray:7 4" in rule(number)  # dashed, where forward steps are solid
    forward = [n for n, e in enumerate(edges) if e.kind is EdgeKind.STEP and e.transition]
    assert forward
    assert all("stroke-dasharray" not in rule(number) for number in forward)
    # the declined run: its path blue, the failed step red, the error's colon a colon
    declined = mermaid_svgs("declined")
    assert "the card was declined for 25.00 EUR: ask" in words(declined)
    assert "rgb(198 40 40)" in rules("declined")  # the failed step
    assert "rgb(21 101 192)" in rules("declined")  # the path taken
    assert "screened added" in words(mermaid_svgs("diff"))
    assert "rgb(46 125 50)" in rules("diff")  # added edges are green


def test_mermaid_draws_a_fork_and_a_join_bar(mermaid_svgs: Callable[[str], ET.Element]) -> None:
    for name in ("parallel", "parallel-run"):
        groups = [g.get("id", "") for g in mermaid_svgs(name).iter(f"{SVG}g")]
        assert any(re.search(r"state-fork_\d+-", g) for g in groups), name
        assert any(re.search(r"state-join_\d+-", g) for g in groups), name


def test_awkward_text_is_drawn_as_written(mermaid_svgs: Callable[[str], ET.Element]) -> None:
    text = words(mermaid_svgs("awkward-run"))
    assert "awkward: saga; #1" in text
    assert 'bad: input; #x; %% <b>direction TB</b> "quoted" `tick` {brace}'[:40] in text


@pytest.mark.parametrize(
    "name",
    ["committed checkout.mmd", "diagrams.md block 1", "reviewing.md block 1", "markdown section"],
)
def test_committed_charts_draw_every_state(
    mermaid_svgs: Callable[[str], ET.Element], name: str
) -> None:
    svg = mermaid_svgs(name)
    text = words(svg)
    checkout = name.startswith(("committed", "diagrams.md"))
    drawing = drawings()["definition" if checkout else "diff"]
    for node in drawn_nodes(drawing):
        assert node.label in text, node.label
    assert mermaid_edge_count(svg) == len(mermaid_edges(drawing))


# -- Graphviz, through dot -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dot_svg(dot: str) -> Callable[[str], ET.Element]:
    def draw(source: str) -> ET.Element:
        result = subprocess.run(
            [dot, "-Tsvg"], input=source, capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        return ET.fromstring(result.stdout)

    return draw


@pytest.mark.parametrize("name", DRAWN)
def test_dot_draws_every_state_by_name_and_every_edge(
    dot_svg: Callable[[str], ET.Element], name: str
) -> None:
    drawing = drawings()[name]
    svg = dot_svg(to_dot(drawing))
    text = words(svg)
    for node in drawn_nodes(drawing):
        assert node.label in text, node.label
    edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
    starts = sum(node.initial for node in drawing.nodes)
    assert len(edges) == len(drawing.edges) + starts


def test_the_committed_svgs_hold_every_state(dot: str) -> None:
    for name, drawing in (
        ("checkout.svg", drawings()["definition"]),
        ("checkout-change.svg", drawings()["diff"]),
    ):
        svg = ET.parse(DOCS / name).getroot()
        text = words(svg)
        for node in drawn_nodes(drawing):
            assert node.label in text, (name, node.label)
        edges = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "edge"]
        assert len(edges) == len(drawing.edges) + 1
