"""Graphviz: a :class:`~statesaga.diagram.model.Diagram` as DOT, and DOT as SVG, PNG or PDF.

DOT is built with the ``graphviz`` package (``pip install 'statesaga[diagrams]'``),
imported here on first use so that ``import statesaga`` never loads it. SVG,
PNG and PDF need Graphviz's ``dot`` program.

The visual language, told apart by line as well as by colour (it survives a
greyscale print): forward steps are solid lines labelled with their
transition and step; compensations are dashed orange lines drawn back from a
step's target, labelled ``<transition>.undo`` and their function; the pivot
is a thick purple line and the states after it are tinted purple; waiting
states are blue and list their events and timeout, event edges are blue with
an open arrowhead, and a timeout is a dotted line drawn beside its state;
guards sit in brackets on branch edges; final states (completed),
``compensated`` and ``failed`` are green, amber and red, double-bordered, and
the paths into ``compensated`` and ``failed`` are double lines. A legend
explains what the diagram uses.

>>> from statesaga._examples import Fulfil
>>> from statesaga.diagram.model import from_definition
>>> text = to_dot(from_definition(Fulfil))
>>> text.splitlines()[0]
'digraph fulfil {'
>>> "reserve.undo" in text and 'style=dashed' in text
True
"""

from __future__ import annotations

import enum
import hashlib
import html
import json
import re
from collections.abc import Iterable
from typing import Any

import attrs

from statesaga.diagram import theme
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.labels import Line, Role, change_lines, duration, edge_lines, node_lines
from statesaga.diagram.model import (
    COMPENSATED,
    FAILED,
    Change,
    Diagram,
    Edge,
    EdgeKind,
    Mode,
    Node,
    NodeKind,
    Outcome,
    Trace,
    drawn_nodes,
)

__all__ = ["BINARY_FORMATS", "DRAWING_VERSION", "fingerprint", "fingerprint_of", "render", "to_dot"]

#: formats drawn by Graphviz's ``dot`` program
BINARY_FORMATS = ("svg", "png", "pdf")

FONT = "Helvetica,Arial,sans-serif"
_START = "(start)"
_MARKER = "statesaga diagram "
#: bump when the drawing's look changes, so that --check asks for committed SVGs to be redrawn
DRAWING_VERSION = 2
_FINGERPRINT = re.compile(re.escape(_MARKER) + r"([0-9a-f]{16})")


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError:
        raise DiagramError(
            "drawing DOT needs the graphviz Python package: pip install 'statesaga[diagrams]' "
            "(or use --format mermaid, which needs nothing)"
        ) from None
    return graphviz


def to_dot(diagram: Diagram) -> str:
    """The diagram as DOT source, stamped with its :func:`fingerprint`."""
    return str(_build(diagram).source)


def fingerprint(diagram: Diagram) -> str:
    """A hash of what the diagram shows, stamped on its DOT (and so on its SVG).

    It is computed from the model, not from the drawing, so a committed SVG can
    be checked against a saga without Graphviz, whichever Graphviz version drew it.

    >>> from statesaga._examples import Fulfil
    >>> from statesaga.diagram.model import from_definition
    >>> drawing = from_definition(Fulfil)
    >>> fingerprint_of(to_dot(drawing)) == fingerprint(drawing)
    True
    """
    data = attrs.asdict(diagram, filter=_shown, value_serializer=_plain)
    text = json.dumps([DRAWING_VERSION, data], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: fields added to the model later, left out of the fingerprint while unset, so that the
#: drawings of sagas that use none of them keep their fingerprints
_LATER_FIELDS = {"timeout_of": None, "void": False, "child": None}


def _shown(attribute: attrs.Attribute[Any], value: Any) -> bool:
    later = _LATER_FIELDS.get(attribute.name, _shown)
    return later is _shown or value != later


def _plain(_: object, __: object, value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def fingerprint_of(text: str) -> str | None:
    """The fingerprint stamped in DOT or SVG text, or ``None``."""
    match = _FINGERPRINT.search(text)
    return None if match is None else match.group(1)


def render(diagram: Diagram, format: str) -> bytes:
    """Draw the diagram as ``svg``, ``png`` or ``pdf`` with Graphviz's ``dot`` program."""
    if format not in BINARY_FORMATS:
        raise DiagramError(f"render draws {', '.join(BINARY_FORMATS)}; got {format!r}")
    graphviz = _graphviz()
    source = graphviz.Source(to_dot(diagram))
    try:
        drawn: bytes = source.pipe(format=format, quiet=True)
    except graphviz.ExecutableNotFound:
        raise DiagramError(
            f"drawing {format.upper()} needs Graphviz's dot program, which is not installed: "
            "install Graphviz (apt-get install graphviz, brew install graphviz, or "
            "https://graphviz.org/download/), or use --format dot or --format mermaid"
        ) from None
    except graphviz.CalledProcessError as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else ""
        raise DiagramError(f"Graphviz's dot failed to draw the diagram: {stderr.strip()}") from None
    return drawn


# -- building -------------------------------------------------------------------------


#: a fork or join bar: a thick black line, as in UML
_BAR = {"shape": "box", "style": "filled", "height": "0.07", "width": "1.6", "fixedsize": "true"}


def _build(diagram: Diagram) -> Any:
    graphviz = _graphviz()
    graph = graphviz.Digraph(
        name=diagram.saga,
        graph_attr={
            "rankdir": "TB",
            "fontname": FONT,
            "labelloc": "t",
            "label": _title(diagram),
            "nodesep": "0.55",
            "ranksep": "0.5",
            "pad": "0.3",
            "bgcolor": "white",
            "comment": _MARKER + fingerprint(diagram),
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fontname": FONT,
            "fontsize": "12",
            "color": theme.INK.stroke,
            "fillcolor": theme.INK.fill,
            "fontcolor": theme.INK.stroke,
            "margin": "0.18,0.08",
        },
        edge_attr={
            "fontname": FONT,
            "fontsize": "10",
            "color": theme.INK.stroke,
            "fontcolor": theme.INK.stroke,
            "arrowsize": "0.8",
        },
    )
    for node in drawn_nodes(diagram):
        if node.initial:
            ink = _ink(diagram, node)
            graph.node(
                _START, "", shape="point", width="0.2", color=ink.stroke, fillcolor=ink.stroke
            )
            graph.edge(_START, node.id, color=ink.stroke)
        if node.kind in (NodeKind.FORK, NodeKind.JOIN):  # a parallel transition's bar
            ink = _ink(diagram, node)
            graph.node(node.id, "", **_BAR, color=ink.stroke, fillcolor=ink.stroke)
            continue
        lines = node_lines(node) + change_lines(node)
        graph.node(node.id, _label(lines, _ink(diagram, node)), **_node_style(diagram, node))
    for edge in diagram.edges:
        ink = _edge_ink(diagram, edge)
        attrs = _edge_style(diagram, edge, ink)
        label = _label(edge_lines(edge) + change_lines(edge), ink, edge=True)
        if edge.kind is EdgeKind.COMPENSATION or _into_state(edge):
            # drawn along its step, arrow pointing back, so the layout keeps one direction
            graph.edge(edge.target, edge.source, label=label, dir="back", **attrs)
        else:
            graph.edge(edge.source, edge.target, label=label, **attrs)
    _legend(graph, diagram)
    # the legend sits at the bottom; the outcomes stay near the states that lead to them
    with graph.subgraph(name="legend") as legend:
        legend.attr(rank="sink")
        legend.node(_LEGEND)
    return graph


def _into_state(edge: Edge) -> bool:
    """A timeout that starts compensating, drawn to the state the first undo leaves from."""
    return (
        edge.kind is EdgeKind.TIMEOUT
        and edge.transition is None
        and not edge.target.startswith("(")
    )


def _title(diagram: Diagram) -> str:
    lines = [f"<b>{_esc(diagram.heading)}</b>"]
    if diagram.deadline is not None and diagram.mode is Mode.DEFINITION:
        before = " before the pivot" if any(e.pivot for e in diagram.edges) else ""
        lines.append(
            f'<font point-size="10">deadline {_esc(duration(diagram.deadline))}: '
            f"compensates if it passes{before}</font>"
        )
    lines += [f'<font point-size="10">{_esc(note)}</font>' for note in diagram.notes]
    return "<" + "<br/>".join(lines) + ">"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _label(lines: Iterable[Line], ink: theme.Paint, *, edge: bool = False) -> str:
    parts: list[str] = []
    for line in lines:
        text = _esc(line.text)
        match line.role:
            case Role.NAME:
                parts.append(f"<b>{text}</b>")
            case Role.STEP:
                parts.append(text if edge else f"<b>{text}</b>")
            case Role.GUARD:
                parts.append(f"<i>{text}</i>")
            case Role.PIVOT:
                parts.append(f'<b><font color="{ink.stroke}">{text}</font></b>')
            case Role.TRIGGER:
                parts.append(f"<i>{text}</i>")
            case Role.MARK:
                parts.append(f'<font point-size="9">{text}</font>')
            case Role.NOTE:
                parts.append(f'<font point-size="9"><b>{text}</b></font>')
    if not parts:
        return ""
    return "<" + "<br/>".join(parts) + ">"


# -- styling ----------------------------------------------------------------------------


def _base_paint(node: Node) -> theme.Paint:
    if node.outcome is not None:
        return theme.OUTCOME[node.outcome]
    if node.waiting:
        return theme.WAITING
    if node.forward_only:
        return theme.FORWARD_ONLY
    return theme.INK


def _ink(diagram: Diagram, node: Node) -> theme.Paint:
    if diagram.mode is Mode.INSTANCE:
        if node.trace is None:
            return theme.MUTED
        if node.trace is Trace.CURRENT:
            return theme.TRACE_CURRENT
        return _base_paint(node)
    if diagram.mode is Mode.DIFF:
        return theme.MUTED if node.change is None else theme.CHANGE[node.change]
    return _base_paint(node)


def _node_style(diagram: Diagram, node: Node) -> dict[str, str]:
    ink = _ink(diagram, node)
    style = {"color": ink.stroke, "fillcolor": ink.fill, "fontcolor": ink.stroke}
    if node.outcome is not None:
        style["peripheries"] = "2"
    if node.kind is NodeKind.OUTCOME:
        style["shape"] = "box"
        style["style"] = "filled"
    if diagram.mode is Mode.INSTANCE and node.trace is not None:
        style["penwidth"] = "3" if node.trace is Trace.CURRENT else "2"
    if diagram.mode is Mode.DIFF and node.change is not None:
        style["penwidth"] = "2"
        if node.change is Change.REMOVED:
            style["style"] = style.get("style", "rounded,filled") + ",dashed"
    return style


def _base_edge_paint(edge: Edge) -> theme.Paint:
    if edge.pivot:
        return theme.PIVOT
    match edge.kind:
        case EdgeKind.EVENT | EdgeKind.TIMEOUT:
            return theme.EVENT
        case EdgeKind.COMPENSATION:
            return theme.COMPENSATION
        case EdgeKind.OUTCOME:
            outcome = Outcome.COMPENSATED if edge.target == COMPENSATED else Outcome.FAILED
            return theme.OUTCOME[outcome]
    return theme.INK


def _edge_ink(diagram: Diagram, edge: Edge) -> theme.Paint:
    if edge.kind is EdgeKind.MIGRATION:
        return theme.MIGRATION
    if diagram.mode is Mode.INSTANCE:
        if edge.trace is None:
            return theme.MUTED
        if edge.trace is Trace.FAILED:
            return theme.TRACE_FAILED
        if edge.kind is EdgeKind.COMPENSATION:
            return theme.TRACE_UNDONE
        return theme.TRACE_PATH
    if diagram.mode is Mode.DIFF:
        return theme.MUTED if edge.change is None else theme.CHANGE[edge.change]
    return _base_edge_paint(edge)


def _edge_style(diagram: Diagram, edge: Edge, ink: theme.Paint) -> dict[str, str]:
    style = {"color": ink.stroke, "fontcolor": ink.stroke}
    match edge.kind:
        case EdgeKind.COMPENSATION:
            style["style"] = "dashed"
            style["penwidth"] = "1.4"
        case EdgeKind.TIMEOUT:
            style["style"] = "dotted"
            style["penwidth"] = "1.6"
        case EdgeKind.EVENT:
            style["arrowhead"] = "empty"
        case EdgeKind.OUTCOME:
            # a double line, like the outcome's double border: where a run ends
            style["color"] = f"{ink.stroke}:invis:{ink.stroke}"
        case EdgeKind.MIGRATION:
            # drawn over the graph, not part of it: it must not move the states around
            style.update(style="dashed", penwidth="2", arrowhead="vee", constraint="false")
    if edge.pivot:
        style["penwidth"] = "3"
    highlighted = (diagram.mode is Mode.INSTANCE and edge.trace is not None) or (
        diagram.mode is Mode.DIFF and edge.change is not None
    )
    if highlighted:
        style["penwidth"] = "2.5"
    return style


# -- legend -----------------------------------------------------------------------------

LegendEntry = tuple[str, str]


def _legend(graph: Any, diagram: Diagram) -> None:
    rows = "".join(
        f'<tr><td width="46" height="14" {sample}></td><td align="left">{_esc(text)}</td></tr>'
        for text, sample in _legend_entries(diagram)
    )
    table = (
        '<<table border="1" cellborder="0" cellspacing="3" cellpadding="2" '
        f'color="{_LEGEND_FRAME}" style="rounded">'
        f'<tr><td colspan="2" align="left"><b>legend</b></td></tr>{rows}</table>>'
    )
    graph.node(_LEGEND, table, shape="plain", fontsize="10", style="", fillcolor="")


_LEGEND = "(legend)"
_LEGEND_FRAME = "#cfd8dc"


def _line(paint: theme.Paint, style: str = "solid", width: int = 2) -> str:
    dash = "" if style == "solid" else f' style="{style}"'
    return f'sides="b" border="{width}" color="{paint.stroke}"{dash}'


def _box(paint: theme.Paint, *, rounded: bool = True, width: int = 1) -> str:
    shape = ' style="rounded"' if rounded else ""
    return f'border="{width}" color="{paint.stroke}" bgcolor="{paint.fill}"{shape}'


def _legend_entries(diagram: Diagram) -> list[LegendEntry]:
    if diagram.mode is Mode.INSTANCE:
        return [
            ("where the run is now", _box(theme.TRACE_CURRENT, width=3)),
            ("states it passed", _box(theme.INK, width=2)),
            ("transitions it took", _line(theme.TRACE_PATH, width=3)),
            ("the step that failed", _line(theme.TRACE_FAILED, width=3)),
            ("compensations that ran", _line(theme.TRACE_UNDONE, "dashed", 3)),
            ("not reached", _line(theme.MUTED)),
        ]
    if diagram.mode is Mode.DIFF:
        entries = [
            ("added", _box(theme.CHANGE[Change.ADDED], width=2)),
            ("changed", _box(theme.CHANGE[Change.CHANGED], width=2)),
            ("removed", _box(theme.CHANGE[Change.REMOVED], width=2)),
            ("unchanged", _box(theme.MUTED)),
            ("step (forward)", _line(theme.MUTED)),
            ("undo (compensation)", _line(theme.MUTED, "dashed")),
            ("on a timeout", _line(theme.MUTED, "dotted")),
            ("ends: compensated or failed", _double(theme.MUTED)),
        ]
        if any(edge.kind is EdgeKind.MIGRATION for edge in diagram.edges):
            entries.append(("migration: where old runs move", _line(theme.MIGRATION, "dashed")))
        return entries
    kinds = {edge.kind for edge in diagram.edges}
    entries = [("step (forward)", _line(theme.INK))]
    if EdgeKind.COMPENSATION in kinds:
        entries.append(("undo (compensation)", _line(theme.COMPENSATION, "dashed")))
    if any(edge.kind is EdgeKind.OUTCOME and edge.target == COMPENSATED for edge in diagram.edges):
        compensated = theme.OUTCOME[Outcome.COMPENSATED]
        entries.append(("nothing left to undo: compensated", _double(compensated)))
    if any(edge.pivot for edge in diagram.edges):
        entries.append(("pivot: nothing before it is undone", _line(theme.PIVOT, width=4)))
    if EdgeKind.EVENT in kinds:
        entries.append(("on an event (open arrowhead)", _line(theme.EVENT)))
    if EdgeKind.TIMEOUT in kinds:
        entries.append(("on a timeout", _line(theme.EVENT, "dotted")))
    if any(node.waiting for node in diagram.nodes):
        entries.append(("waits for an event", _box(theme.WAITING)))
    if any(node.forward_only for node in diagram.nodes):
        entries.append(("after the pivot: forward only", _box(theme.FORWARD_ONLY)))
    failed = (
        "failed: needs attention"
        if FAILED in {n.id for n in drawn_nodes(diagram)}
        else ("failed (not drawn): an undo kept failing; retry it")
    )
    entries += [
        ("completed (a final state)", _box(theme.OUTCOME[Outcome.COMPLETED], width=2)),
        ("compensated", _box(theme.OUTCOME[Outcome.COMPENSATED], rounded=False, width=2)),
        (failed, _box(theme.OUTCOME[Outcome.FAILED], rounded=False, width=2)),
    ]
    return entries


def _double(paint: theme.Paint) -> str:
    return f'sides="tb" border="1" color="{paint.stroke}"'
