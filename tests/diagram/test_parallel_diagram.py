"""A parallel transition in the diagram model: fork and join bars, one edge per branch,
a compensation edge per compensatable branch step, and a run's branches on its overlay."""

from __future__ import annotations

from parallel_trip import Agency, BookTripTogether, SoldOut, TripOrder

from statesaga import Engine
from statesaga.diagram import EdgeKind, Trace, from_definition, overlay, to_dot, to_mermaid
from statesaga.diagram.model import NodeKind


def test_a_fork_is_drawn_as_bars_with_an_edge_per_branch() -> None:
    drawing = from_definition(BookTripTogether)

    assert drawing.node("book.fork").kind is NodeKind.FORK
    assert drawing.node("book.join").kind is NodeKind.JOIN
    into = drawing.edge("book")
    assert (into.source, into.target) == ("budgeted", "book.fork")
    branches = [e for e in drawing.edges if e.source == "book.fork"]
    assert [(e.transition, e.step, e.target) for e in branches] == [
        ("book.flight", "book_flight", "book.join"),
        ("book.hotel", "book_hotel", "book.join"),
        ("book.car", "reserve_car, then confirm_car", "book.join"),
    ]
    assert drawing.edge("book.car.2") is drawing.edge("book.car.1")  # one edge per branch
    out = drawing.edge("book.join")
    assert (out.source, out.target) == ("book.join", "booked")
    undos = {e.id: (e.source, e.target) for e in drawing.edges if e.kind is EdgeKind.COMPENSATION}
    for step in ("book.flight", "book.hotel", "book.car.1", "book.car.2"):
        assert undos[f"{step}.undo"] == ("booked", "budgeted")
    assert drawing.edge("book.hotel.undo").undo_on_failure


def test_both_formats_write_the_bars() -> None:
    drawing = from_definition(BookTripTogether)
    mermaid = to_mermaid(drawing)
    assert "<<fork>>" in mermaid
    assert "<<join>>" in mermaid
    dot = to_dot(drawing)
    assert '"book.fork"' in dot
    assert '"book.join"' in dot


def test_an_overlay_marks_the_branches_a_run_took_and_the_one_that_failed() -> None:
    agency = Agency()
    agency.failures["book_hotel"] = [SoldOut("no rooms left")]
    with Engine("sqlite://", resources=[agency]) as engine:
        run = engine.get(engine.start(BookTripTogether, TripOrder("t-1")).id)

    drawn = overlay(from_definition(BookTripTogether), run)

    assert drawn.edge("book.hotel").trace is Trace.FAILED
    assert drawn.edge("book.hotel.undo").trace is Trace.TAKEN
