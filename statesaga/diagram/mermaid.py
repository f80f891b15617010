"""Mermaid: a :class:`~statesaga.diagram.model.Diagram` as a ``stateDiagram-v2``.

GitHub and GitLab draw a ```` ```mermaid ```` block in a pull request, an issue
or a Markdown file, so this is the view a reviewer sees without leaving the
review. Every state is declared with its name (``state "reserved" as
reserved``), so the name stays on the box when lines are added under it; the
states come first and the forward transitions before the compensations, so
Mermaid's layout runs top to bottom from the start marker. The edges are
styled by kind through the chart's ``themeCSS`` (state diagrams have no
``linkStyle``): compensations dashed orange, timeouts dotted, the pivot thick;
an overlay draws the run's path thick and blue, a diff its changes green,
orange and red (and a declared migration's moves dashed teal), and what is
not highlighted grey. The words carry the same
marks (``✓``, ``✗``, ``+``, ``~``, ``\u2212``) where a renderer drops the styles.

>>> from statesaga._examples import Fulfil
>>> from statesaga.diagram.model import from_definition
>>> text = to_mermaid(from_definition(Fulfil))
>>> print("\\n".join(text.splitlines()[:2]))
---
title: "fulfil v1 \u00b7 deadline 1 min"
>>> "    reserved --> validated : reserve.undo<br>release_stock" in text.splitlines()
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from statesaga.diagram import theme
from statesaga.diagram.labels import change_lines, duration, edge_lines, node_lines
from statesaga.diagram.model import (
    COMPENSATED,
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

__all__ = ["mermaid_edges", "to_mermaid"]

_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# words Mermaid's state-diagram lexer reads as keywords where an id may stand; "style"
# and "classDef" anywhere on a line make Mermaid's entity encoder trim a ";"
_KEYWORDS = frozenset(
    {"as", "class", "classdef", "click", "direction", "end", "hide", "note", "scale", "state"}
    | {"style", "statediagram", "statediagram-v2", "href", "left", "right", "of"}
)
_INDENT = "    "
_BREAK = "<br>"
# characters the state-diagram lexer or the HTML sanitiser would read, written as
# Mermaid's entity codes (#58; is a colon)
_ENTITIES = {
    "#": "#35;",
    ":": "#58;",
    ";": "#59;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "%": "#37;",
    "`": "#96;",
    "{": "#123;",
    "}": "#125;",
}
_ESCAPED = re.compile("[" + re.escape("".join(_ENTITIES)) + "]")
# a line holding "direction TB" anywhere is read as a direction statement
_DIRECTION = re.compile(r"(direction)\s+(tb|bt|rl|lr)", re.IGNORECASE)


_BARS = (NodeKind.FORK, NodeKind.JOIN)


def to_mermaid(diagram: Diagram) -> str:
    """The diagram as Mermaid ``stateDiagram-v2`` text (ends with a newline)."""
    nodes = drawn_nodes(diagram)
    ids = _ids(nodes)
    edges = mermaid_edges(diagram)
    # a title is one line: a long note (a run's error) is cut, and stays whole on its edge
    notes = [n if len(n) <= 72 else n[:69].rstrip() + "..." for n in _notes(diagram)]
    title = " \u00b7 ".join([diagram.heading, *notes])
    css = _edge_css(diagram, edges)
    lines = ["---", f"title: {json.dumps(title, ensure_ascii=False)}"]
    if css:
        lines += ["config:", "  themeCSS: |", *(f"    {rule}" for rule in css)]
    lines += ["---", "stateDiagram-v2", f"{_INDENT}direction TB"]
    body: list[str] = []
    # every state declared with its name first, in the saga's order: Mermaid keeps the name
    # on the box when lines are added under it, and lays out from the first state down
    for node in nodes:
        if node.kind in _BARS:  # a parallel transition's fork or join bar
            body.append(f"state {ids[node.id]} <<{node.kind.value}>>")
            continue
        body.append(f'state "{_text(node.label)}" as {ids[node.id]}')
        for line in node_lines(node)[1:] + change_lines(node):
            body.append(f"{ids[node.id]} : {_text(line.text)}")
    for edge in edges:
        body.append(_transition(edge, ids, diagram.mode))
    body += _classes(diagram, nodes, ids)
    lines += [_INDENT + line for line in body]
    return "\n".join(lines) + "\n"


def mermaid_edges(diagram: Diagram) -> list[Edge]:
    """The transitions of the chart in the order they are written (and drawn).

    The start marker's and the final states' ``[*]`` edges are included, with
    ``[*]`` as their source or target; forward edges come before the ones that
    lead back, so Mermaid's layout keeps the forward direction.
    """
    start = [
        Edge("(start)", EdgeKind.STEP, "[*]", node.id) for node in diagram.nodes if node.initial
    ]
    ends = [Edge(f"{node.id}.(end)", EdgeKind.STEP, node.id, "[*]") for node in diagram.nodes]
    ends = [e for e, n in zip(ends, diagram.nodes, strict=True) if n.final]
    forward = [e for e in diagram.edges if e.kind in (EdgeKind.STEP, EdgeKind.EVENT)]
    forward += [e for e in diagram.edges if e.kind is EdgeKind.TIMEOUT and e.transition]
    rest = [e for e in diagram.edges if e not in forward]
    outcomes = [e for e in rest if e.kind is EdgeKind.OUTCOME]
    back = [e for e in rest if e.kind is not EdgeKind.OUTCOME]
    return [*start, *forward, *ends, *outcomes, *back]


def _notes(diagram: Diagram) -> list[str]:
    notes = list(diagram.notes)
    if diagram.deadline is not None and diagram.mode is Mode.DEFINITION:
        notes.insert(0, f"deadline {duration(diagram.deadline)}")
    return notes


def _ids(nodes: Iterable[Node]) -> dict[str, str]:
    """Mermaid ids: the state's own name where Mermaid reads it as an id, else ``state_N``.

    The name itself is always drawn from the ``state "name" as id`` line.
    """
    ids: dict[str, str] = {}
    used: set[str] = set()
    for number, node in enumerate(nodes, 1):
        name = node.id
        if node.kind is NodeKind.OUTCOME:
            candidate = f"outcome_{node.outcome.value if node.outcome else number}"
        elif node.kind in _BARS:
            candidate = f"{node.kind.value}_{number}"
        elif _SAFE_ID.fullmatch(name) and not _reserved(name):
            candidate = name
        else:
            candidate = f"state_{number}"
        unique, suffix = candidate, 1
        while unique in used or _reserved(unique):
            suffix += 1
            unique = f"{candidate}_{suffix}"
        ids[name] = unique
        used.add(unique)
    return ids


def _reserved(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _KEYWORDS
        or lowered.startswith("default")
        or "style" in lowered
        or "classdef" in lowered
        or "direction" in lowered
    )


def _text(text: str) -> str:
    """Text on one line, with what Mermaid would read written as its entity codes."""
    text = _ESCAPED.sub(lambda m: _ENTITIES[m.group()], " ".join(text.split()))
    return _DIRECTION.sub(lambda m: f"{m.group(1)}#32;{m.group(2)}", text)


_MARKS = {
    Change.ADDED: "+",
    Change.REMOVED: "\u2212",
    Change.CHANGED: "~",
    Trace.TAKEN: "\u2713",
    Trace.FAILED: "\u2717",
}


def _transition(edge: Edge, ids: dict[str, str], mode: Mode) -> str:
    source = ids.get(edge.source, edge.source)
    target = ids.get(edge.target, edge.target)
    arrow = f"{source} --> {target}"
    if edge.source == "[*]" or edge.target == "[*]":
        return arrow
    words = [line.text for line in edge_lines(edge)]
    mark = None
    if mode is Mode.DIFF and edge.change is not None:
        mark = _MARKS[edge.change]
    elif mode is Mode.INSTANCE and edge.trace is not None:
        mark = _MARKS[edge.trace]
    if mark is not None:
        if not words and edge.change is not None:
            words.append(edge.change.value)  # a bare sign reads as a typo
        words.insert(0, mark)
    label = _label(words)
    return f"{arrow} : {label}" if label else arrow


def _label(words: list[str]) -> str:
    """One line per part, as Graphviz draws it: narrow labels keep clear of each other."""
    lines: list[str] = []
    for word in words:
        if lines and lines[-1] in _MARKS.values():
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return _BREAK.join(_text(line) for line in lines)


# -- styles -------------------------------------------------------------------------------


def _rgb(colour: str) -> str:
    # a "#rrggbb;" in the chart's text would be read as an entity code
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red},{green},{blue})"


_DASHES = {
    EdgeKind.COMPENSATION: "7 4",
    EdgeKind.TIMEOUT: "2 4",
    EdgeKind.OUTCOME: "10 3 2 3",
}


def _edge_look(diagram: Diagram, edge: Edge) -> tuple[theme.Paint, float, str | None] | None:
    """The colour, width and dashes of an edge; ``None`` keeps Mermaid's own."""
    dash = _DASHES.get(edge.kind)
    if edge.source == "[*]" or edge.target == "[*]":
        return None if diagram.mode is Mode.DEFINITION else (theme.MUTED, 1, None)
    if edge.kind is EdgeKind.MIGRATION:
        return theme.MIGRATION, 3.5, "4 3"
    if diagram.mode is Mode.INSTANCE:
        if edge.trace is Trace.FAILED:
            return theme.TRACE_FAILED, 3.5, dash
        if edge.trace is Trace.TAKEN:
            undo = edge.kind is EdgeKind.COMPENSATION
            return (theme.TRACE_UNDONE if undo else theme.TRACE_PATH), 3.5, dash
        return theme.MUTED, 1, dash
    if diagram.mode is Mode.DIFF:
        if edge.change is None:
            return theme.MUTED, 1, dash
        removed = edge.change is Change.REMOVED
        return theme.CHANGE[edge.change], 3.5, "6 4" if removed else dash
    if edge.pivot:
        return theme.PIVOT, 3.5, None
    match edge.kind:
        case EdgeKind.COMPENSATION:
            return theme.COMPENSATION, 1.6, dash
        case EdgeKind.EVENT | EdgeKind.TIMEOUT:
            return theme.EVENT, 1.6, dash
        case EdgeKind.OUTCOME:
            outcome = Outcome.COMPENSATED if edge.target == COMPENSATED else Outcome.FAILED
            return theme.OUTCOME[outcome], 1.6, dash
    return None


def _edge_css(diagram: Diagram, edges: list[Edge]) -> list[str]:
    """CSS that styles each drawn edge and its label by the number Mermaid gives it (``edgeN``)."""
    rules: dict[str, list[str]] = {}
    for number, edge in enumerate(edges):
        look = _edge_look(diagram, edge)
        if look is None:
            continue
        paint, width, dash = look
        line = f"stroke:{_rgb(paint.stroke)} !important;stroke-width:{width}px !important"
        line += f";stroke-dasharray:{dash}" if dash else ""
        rules.setdefault(line, []).append(f"path[data-id=edge{number}]")
        # labels of what is not highlighted are grey, of what is, the line's colour
        text = paint if paint is theme.MUTED or width > 3 else None
        if text is not None:
            ink = "rgb(120,144,156)" if paint is theme.MUTED else _rgb(paint.stroke)
            rules.setdefault(f"color:{ink} !important", []).append(
                f"g.label[data-id=edge{number}] *"
            )
    return [f"{','.join(selectors)} {{{style}}}" for style, selectors in rules.items()]


def _style(paint: theme.Paint, width: int = 1, dashed: bool = False) -> str:
    style = f"fill:{paint.fill},stroke:{paint.stroke},color:{paint.stroke},stroke-width:{width}px"
    return style + (",stroke-dasharray:5 3" if dashed else "")


def _classes(diagram: Diagram, nodes: Iterable[Node], ids: dict[str, str]) -> list[str]:
    classes: dict[str, tuple[str, list[str]]] = {}

    def put(name: str, style: str, node: Node) -> None:
        classes.setdefault(name, (style, []))[1].append(ids[node.id])

    for node in nodes:
        if node.kind in _BARS:
            continue  # drawn as Mermaid's own bars, which take no class
        if diagram.mode is Mode.INSTANCE:
            if node.trace is Trace.CURRENT:
                put("current", _style(theme.TRACE_CURRENT, 3), node)
            elif node.trace is Trace.VISITED:
                put("visited", _style(theme.TRACE_PATH, 2), node)
            else:
                put("muted", _style(theme.MUTED), node)
        elif diagram.mode is Mode.DIFF:
            if node.change is None:
                put("muted", _style(theme.MUTED), node)
            else:
                paint = theme.CHANGE[node.change]
                put(node.change.value, _style(paint, 3, node.change is Change.REMOVED), node)
        elif node.outcome is not None:
            put(node.outcome.value, _style(theme.OUTCOME[node.outcome], 2), node)
        elif node.waiting:
            put("waiting", _style(theme.WAITING), node)
        elif node.forward_only:
            put("forwardOnly", _style(theme.FORWARD_ONLY), node)
    lines = [f"classDef {name} {style}" for name, (style, _) in classes.items()]
    lines += [f"class {','.join(members)} {name}" for name, (_, members) in classes.items()]
    return lines
