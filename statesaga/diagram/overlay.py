"""The instance overlay: one run's path drawn on its saga's diagram.

From a run's history (``Engine(db).get(id)``) it marks the states the run
visited, where it is now (a state, or its terminal outcome), the transitions
it took, the step that failed with its error, and the compensations that ran.
Everything the run did not touch is drawn muted.

A declined payment (on in-memory SQLite), drawn:

>>> from statesaga import Engine
>>> from statesaga._examples import Fulfil, Order
>>> from statesaga.diagram.model import from_definition
>>> with Engine("sqlite://") as engine:
...     declined = engine.start(Fulfil, Order("o-2", card="declined"))
...     run = engine.get(declined.id)  # with its history
>>> drawn = overlay(from_definition(Fulfil), run)
>>> for item in (drawn.edge("authorize"), drawn.edge("reserve.undo"), drawn.node("(compensated)")):
...     print(item.id, item.trace.value)
authorize failed
reserve.undo taken
(compensated) current
"""

from __future__ import annotations

from collections import Counter
from typing import TypeVar

import attrs

from statesaga.core import UNDO_SUFFIX, ErrorInfo, HistoryKind, Status, undo_name
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.labels import short_type
from statesaga.diagram.model import (
    COMPENSATED,
    FAILED,
    Diagram,
    Edge,
    EdgeKind,
    Mode,
    Node,
    Outcome,
    Trace,
    outcome_node,
)
from statesaga.run import Run

__all__ = ["overlay"]

_MOVES = (HistoryKind.FORWARD, HistoryKind.EVENT)
_Item = TypeVar("_Item", Node, Edge)


def overlay(diagram: Diagram, run: Run) -> Diagram:
    """``diagram`` with ``run``'s path marked on it (its history must be loaded)."""
    if run.saga != diagram.saga:
        raise DiagramError(
            f"run {run.id} is a run of saga {run.saga!r}, not {diagram.saga!r}; "
            "draw it on its own saga",
            saga=diagram.saga,
            instance_id=run.id,
        )
    nodes = {node.id: node for node in diagram.nodes}
    edges = {edge.id: edge for edge in diagram.edges}
    # a compensation drawn once for several transitions answers to each of their names
    named = {name: edge.id for edge in diagram.edges for name in (edge.id, *edge.merged)}
    _check_fits(diagram, run, nodes, named)

    node_marks: dict[str, Trace] = {}
    node_notes: dict[str, list[str]] = {}
    edge_marks: dict[str, Trace] = {}
    edge_notes: dict[str, list[str]] = {}
    retries: Counter[str] = Counter()
    for entry in run.history:
        node_marks[entry.from_state] = Trace.VISITED
        node_marks[entry.to_state] = Trace.VISITED
        name = entry.transition
        if entry.kind in _MOVES and name is not None:
            edge_marks[name] = Trace.TAKEN
        elif entry.kind is HistoryKind.TIMEOUT:
            if entry.error is None and name is not None:
                edge_marks[name] = Trace.TAKEN  # an .on_timeout() transition
            elif f"{entry.from_state}.timeout" in edges:
                edge_marks[f"{entry.from_state}.timeout"] = Trace.TAKEN
        elif entry.kind is HistoryKind.COMPENSATE and name in _undone(named):
            edge_marks[named[undo_name(name)]] = Trace.TAKEN
        elif entry.kind is HistoryKind.RETRY and name is not None:
            retries[name] += 1
        elif entry.kind is HistoryKind.COMPENSATION_RETRY and name in _undone(named):
            retries[named[undo_name(name)]] += 1
        elif entry.kind is HistoryKind.FAILURE and entry.error is not None:
            undo = entry.error.undo
            failed = None if name is None else named.get(undo_name(name) if undo else name)
            if failed is not None:
                edge_marks[failed] = Trace.FAILED
                edge_notes.setdefault(failed, []).extend(_failure(entry.error, entry.attempt))
            else:
                node_notes.setdefault(entry.from_state, []).extend(_failure(entry.error, None))
        elif entry.kind is HistoryKind.DEADLINE:
            node_notes.setdefault(entry.from_state, []).append("the deadline passed here")
        elif entry.kind is HistoryKind.CANCEL:
            node_notes.setdefault(entry.from_state, []).append("cancelled here")
    for name, count in retries.items():
        if name in edges:
            edge_notes.setdefault(name, []).append(f"retried {count}\u00d7")

    current = _current(run)
    node_marks[current] = Trace.CURRENT
    if current in (COMPENSATED, FAILED):
        outcome = Outcome.COMPENSATED if current == COMPENSATED else Outcome.FAILED
        ending = f"{run.state}.{outcome.value}"
        if ending not in edges:
            # an undo that kept failing: the definition draws no way into `failed`
            edges[ending] = Edge(ending, EdgeKind.OUTCOME, run.state, current)
            if current not in nodes:
                nodes[current] = outcome_node(outcome, "an undo kept failing")
        edge_marks[ending] = Trace.TAKEN
    else:
        node_notes.setdefault(current, []).insert(0, f"now: {run.status.value}")

    marked_nodes = tuple(
        _mark(node, node_marks.get(node.id), node_notes.get(node.id, [])) for node in nodes.values()
    )
    marked_edges = tuple(
        _mark(edge, edge_marks.get(edge.id), edge_notes.get(edge.id, [])) for edge in edges.values()
    )
    notes = [f"{run.status.value} in state {run.state}"]
    if run.error is not None:
        notes.append(f"{short_type(run.error.type)}: {run.error.message}")
    if run.version != diagram.version:
        notes.append(f"a run of version {run.version}, drawn on version {diagram.version}")
    return attrs.evolve(
        diagram,
        nodes=marked_nodes,
        edges=marked_edges,
        mode=Mode.INSTANCE,
        title=f"{diagram.heading} \u00b7 run {run.id}",
        notes=(*diagram.notes, *notes),
    )


def _undone(named: dict[str, str]) -> set[str]:
    return {name.removesuffix(UNDO_SUFFIX) for name in named if name.endswith(UNDO_SUFFIX)}


def _current(run: Run) -> str:
    if run.status is Status.COMPENSATED:
        return COMPENSATED
    if run.status is Status.FAILED:
        return FAILED
    return run.state


def _failure(error: ErrorInfo, attempt: int | None) -> list[str]:
    where = f" on try {attempt}" if attempt else ""
    message = error.message if len(error.message) <= 60 else error.message[:57] + "..."
    return [f"failed{where} ({short_type(error.type)})", message]


def _mark(item: _Item, trace: Trace | None, notes: list[str]) -> _Item:
    if trace is None and not notes:
        return item
    return attrs.evolve(item, trace=trace, notes=(*item.notes, *notes))


def _check_fits(diagram: Diagram, run: Run, nodes: dict[str, Node], named: dict[str, str]) -> None:
    states = {run.state} | {s for e in run.history for s in (e.from_state, e.to_state)}
    transitions = {e.transition for e in run.history if e.transition is not None}
    missing = sorted(states - nodes.keys()) + sorted(
        t for t in transitions if t not in named and undo_name(t) not in named
    )
    if missing:
        raise DiagramError(
            f"run {run.id} (version {run.version}) went through {', '.join(missing)}, which "
            f"version {diagram.version} of saga {diagram.saga!r} does not have; draw the run "
            f"on version {run.version}",
            saga=diagram.saga,
            instance_id=run.id,
        )
