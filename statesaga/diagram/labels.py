"""The words on a diagram, shared by every renderer.

Each node and edge becomes a few :class:`Line` s tagged with a :class:`Role`,
so a renderer can set a step name in bold, a guard in italics or a note in
colour, while the wording stays the same in DOT and in Mermaid.

>>> from statesaga.diagram.model import Edge, EdgeKind
>>> undo = Edge("reserve.undo", EdgeKind.COMPENSATION, "reserved", "validated",
...             step="release_inventory", undoes="reserve")
>>> [line.text for line in edge_lines(undo)]
['reserve.undo', 'release_inventory']
>>> duration(45), duration(90), duration(7200), duration(0.25)
('45 s', '1.5 min', '2 h', '0.25 s')
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from statesaga.diagram.model import FAILED, Change, Edge, EdgeKind, Node

__all__ = [
    "Line",
    "Role",
    "change_lines",
    "duration",
    "edge_lines",
    "edge_name",
    "node_lines",
    "short_type",
    "wait_text",
]


class Role(enum.StrEnum):
    """What a line of a label says, for a renderer to style."""

    NAME = "name"
    GUARD = "guard"
    TRIGGER = "trigger"
    PIVOT = "pivot"
    STEP = "step"
    MARK = "mark"
    NOTE = "note"


class Line(NamedTuple):
    """One line of a label."""

    role: Role
    text: str


def wait_text(seconds: float | None, computed_by: str | None) -> str:
    """A wait's length: a fixed duration, or the function computing it for each run.

    >>> wait_text(7200.0, None), wait_text(None, "confirmation_window"), wait_text(None, "<lambda>")
    ('2 h', 'confirmation_window(ctx)', 'f(ctx)')
    """
    if computed_by is None:
        return duration(seconds or 0.0)
    name = computed_by.rsplit(".", 1)[-1]
    return f"{'f' if name == '<lambda>' else name}(ctx)"


def duration(seconds: float) -> str:
    """A duration as a person would write it on a whiteboard."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{_number(seconds / size)} {unit}"
    return f"{_number(seconds)} s"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def short_type(name: str) -> str:
    """``package.module.PaymentDeclined`` -> ``PaymentDeclined``."""
    return name.rsplit(".", 1)[-1]


def node_lines(node: Node) -> list[Line]:
    """The label of a node: its name, then what it waits for and how long."""
    lines = [Line(Role.NAME, node.label)]
    if node.summary is not None:
        lines.append(Line(Role.MARK, node.summary))
    if node.events:
        lines.append(Line(Role.TRIGGER, "waits for " + ", ".join(node.events)))
    if node.timeout is not None or node.timeout_of is not None:
        lines.append(Line(Role.MARK, f"timeout {wait_text(node.timeout, node.timeout_of)}"))
    lines += [Line(Role.NOTE, note) for note in node.notes]
    return lines


def edge_name(edge: Edge) -> str | None:
    """What history, metrics and errors call the edge: its transition, or ``<transition>.undo``.

    A compensation drawn once for several transitions names them all.
    """
    if edge.kind is EdgeKind.COMPENSATION:
        return ", ".join((edge.id, *edge.merged))
    return edge.transition


def edge_lines(edge: Edge) -> list[Line]:
    """The label of an edge: its name, guard or trigger, the step it runs and its marks."""
    lines: list[Line] = []
    name = edge_name(edge)
    if name is not None:
        lines.append(Line(Role.NAME, name))
    if edge.guard is not None:
        lines.append(Line(Role.GUARD, f"[{edge.guard}]"))
    elif edge.fallback:
        lines.append(Line(Role.GUARD, "[else]"))
    if edge.kind is EdgeKind.EVENT:
        lines.append(Line(Role.TRIGGER, f"on {edge.event}"))
    elif edge.kind is EdgeKind.TIMEOUT and (edge.timeout, edge.timeout_of) != (None, None):
        wait = wait_text(edge.timeout, edge.timeout_of)
        if edge.transition is not None:
            lines.append(Line(Role.TRIGGER, f"after {wait}"))
        else:
            lines.append(Line(Role.TRIGGER, f"no event in {wait}"))
            ends = "fail" if edge.target == FAILED else "compensate"
            lines.append(Line(Role.MARK, ends))
    elif edge.kind is EdgeKind.OUTCOME and edge.target == FAILED:
        lines.append(Line(Role.TRIGGER, "retries run out"))
    if edge.pivot:
        lines.append(Line(Role.PIVOT, "PIVOT"))
    if edge.child is not None:
        lines.append(Line(Role.TRIGGER, f"child saga {edge.child}"))
    if edge.step is not None:
        lines.append(Line(Role.STEP, edge.step))
    if edge.kind is EdgeKind.COMPENSATION:
        if edge.void:
            lines.append(Line(Role.MARK, f"void: only if {edge.undoes} fails"))
        elif edge.undo_on_failure:
            lines.append(Line(Role.MARK, f"also if {edge.undoes} fails"))
    else:
        marks = [
            m
            for m, on in (("read-only", edge.read_only), ("transactional", edge.transactional))
            if on
        ]
        if marks:
            lines.append(Line(Role.MARK, ", ".join(marks)))
    lines += [Line(Role.NOTE, note) for note in edge.notes]
    return lines


def change_lines(item: Node | Edge) -> list[Line]:
    """``added`` or ``removed`` for a diff's new or dropped node or edge (changes carry notes)."""
    if item.change in (Change.ADDED, Change.REMOVED):
        return [Line(Role.NOTE, item.change.value)]
    return []
