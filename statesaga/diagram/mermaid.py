"""Mermaid: a :class:`~statesaga.diagram.model.Diagram` as a ``stateDiagram-v2``.

GitHub and GitLab draw a ```` ```mermaid ```` block in a pull request, an issue
or a Markdown file, so this is the view a reviewer sees without leaving the
review. Mermaid state diagrams cannot dash or colour a single transition, so
the visual language carries over in words and in state colours: compensations
read ``undo ...``, the pivot ``PIVOT``, guards sit in brackets, waiting states
list their events and timeout, and the outcomes, waiting states, overlay and
diff marks are coloured with the same palette as the Graphviz drawing.

>>> from definitions.checkout.saga import CompleteCart
>>> from statesaga.diagram.model import from_definition
>>> text = to_mermaid(from_definition(CompleteCart))
>>> print("\\n".join(text.splitlines()[:5]))
---
title: "complete-cart v1 \u00b7 deadline 1 min"
---
stateDiagram-v2
    direction TB
>>> "    reserved --> validated : undo release_inventory" in text.splitlines()
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from statesaga.diagram import theme
from statesaga.diagram.labels import change_lines, duration, edge_lines, node_lines
from statesaga.diagram.model import Change, Diagram, Edge, EdgeKind, Mode, Node, NodeKind, Trace

__all__ = ["to_mermaid"]

_SAFE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# words Mermaid's state-diagram lexer reads as keywords where an id may stand
_KEYWORDS = frozenset(
    {"as", "class", "classdef", "click", "direction", "end", "hide", "note", "scale", "state"}
    | {"style", "statediagram", "statediagram-v2"}
)
_DIRECTION = re.compile(r"(direction)(\s+)(tb|bt|rl|lr)", re.IGNORECASE)
_INDENT = "    "


def to_mermaid(diagram: Diagram) -> str:
    """The diagram as Mermaid ``stateDiagram-v2`` text (ends with a newline)."""
    ids = _ids(diagram.nodes)
    title = _text(" \u00b7 ".join([diagram.heading, *_notes(diagram)]))
    lines = [
        "---",
        f"title: {json.dumps(title, ensure_ascii=False)}",
        "---",
        "stateDiagram-v2",
        f"{_INDENT}direction TB",
    ]
    body: list[str] = []
    for node in diagram.nodes:
        if ids[node.id] != node.label:
            body.append(f'state "{_text(node.label)}" as {ids[node.id]}')
    for node in diagram.nodes:
        for line in node_lines(node)[1:] + change_lines(node):
            body.append(f"{ids[node.id]} : {_text(line.text)}")
    for node in diagram.nodes:
        if node.initial:
            body.append(f"[*] --> {ids[node.id]}")
    forward = [e for e in diagram.edges if e.kind is not EdgeKind.COMPENSATION]
    undo = [e for e in diagram.edges if e.kind is EdgeKind.COMPENSATION]
    for edge in forward:
        body.append(_transition(edge, ids, diagram.mode))
    for node in diagram.nodes:
        if node.final:
            body.append(f"{ids[node.id]} --> [*]")
    if undo:
        body.append("%% compensations run in reverse, from a step's target back to its source")
    for edge in undo:
        body.append(_transition(edge, ids, diagram.mode))
    body += _classes(diagram, ids)
    lines += [_INDENT + line for line in body]
    return "\n".join(lines) + "\n"


def _notes(diagram: Diagram) -> list[str]:
    notes = list(diagram.notes)
    if diagram.deadline is not None and diagram.mode is Mode.DEFINITION:
        notes.insert(0, f"deadline {duration(diagram.deadline)}")
    return notes


def _ids(nodes: Iterable[Node]) -> dict[str, str]:
    """Mermaid ids: the state's own name where Mermaid's lexer reads it as an id."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for node in nodes:
        name = node.id
        if node.kind is NodeKind.OUTCOME:
            candidate = f"outcome_{node.label}" if _SAFE_ID.fullmatch(node.label) else "outcome"
        elif _SAFE_ID.fullmatch(name) and not _reserved(name):
            candidate = name
        else:
            candidate = "state_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        unique, number = candidate, 1
        while unique in used or _reserved(unique):
            number += 1
            unique = f"{candidate}_{number}"
        ids[name] = unique
        used.add(unique)
    return ids


def _reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered in _KEYWORDS or lowered.startswith("default")


def _text(text: str) -> str:
    """Text Mermaid's lexer and its HTML sanitiser both leave alone, on one line."""
    text = " ".join(text.split())
    for bad, good in (
        (":", "\u2236"),  # a colon ends a description in the lexer
        (";", ","),  # so does a semicolon
        ('"', "\u201d"),
        ("<", "\u2039"),  # the sanitiser strips tags
        (">", "\u203a"),
        ("#", "\u266f"),  # starts an entity code
        ("%%", "% %"),  # starts a comment
        ("`", "'"),
    ):
        text = text.replace(bad, good)
    # a line holding "direction TB" anywhere is read as a direction statement
    # (a zero-width space is not whitespace to that lexer's regular expressions)
    return _DIRECTION.sub(lambda m: f"{m.group(1)}\u200b {m.group(3)}", text)


_MARKS = {
    Change.ADDED: "+",
    Change.REMOVED: "\u2212",
    Change.CHANGED: "~",
    Trace.TAKEN: "\u2713",
    Trace.FAILED: "\u2717",
}


def _transition(edge: Edge, ids: dict[str, str], mode: Mode) -> str:
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
    arrow = f"{ids[edge.source]} --> {ids[edge.target]}"
    return f"{arrow} : {label}" if label else arrow


def _label(words: list[str]) -> str:
    text = ""
    for word in words:
        joiner = " " if text in _MARKS.values() or not text else " \u00b7 "
        text = f"{text}{joiner}{word}" if text else word
    return _text(text)


def _style(paint: theme.Paint, width: int = 1, dashed: bool = False) -> str:
    style = f"fill:{paint.fill},stroke:{paint.stroke},color:{paint.stroke},stroke-width:{width}px"
    return style + (",stroke-dasharray:5 3" if dashed else "")


def _classes(diagram: Diagram, ids: dict[str, str]) -> list[str]:
    classes: dict[str, tuple[str, list[str]]] = {}

    def put(name: str, style: str, node: Node) -> None:
        classes.setdefault(name, (style, []))[1].append(ids[node.id])

    for node in diagram.nodes:
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
                put(node.change.value, _style(paint, 2, node.change is Change.REMOVED), node)
        elif node.outcome is not None:
            put(node.outcome.value, _style(theme.OUTCOME[node.outcome], 2), node)
        elif node.waiting:
            put("waiting", _style(theme.WAITING), node)
        elif node.forward_only:
            put("forwardOnly", _style(theme.FORWARD_ONLY), node)
    lines = [f"classDef {name} {style}" for name, (style, _) in classes.items()]
    lines += [f"class {','.join(members)} {name}" for name, (_, members) in classes.items()]
    return lines
