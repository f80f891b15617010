"""The diff: two versions of a saga drawn as one diagram, with the changes coloured.

States and edges are matched by name (a compensation by its step's
transition). What only the new version has is *added*, what only the old one
has is *removed* (and still drawn, so a reviewer sees what went), and what
both have but differently is *changed*, with a note saying what changed.
Everything else is drawn muted. When the new version declares a migration
from the old one, its moves are drawn too: a dashed edge from each old state
to the state of another name its runs land in, and a note listing them.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.frozen
... class Cart:
...     cart_id: str
>>> @attrs.frozen
... class Data:
...     done: bool = False
>>> def reserve(ctx): ...
>>> def release(ctx): ...
>>> def screen(ctx): ...
>>> class V1(Saga[Cart, Data]):
...     name = "checkout"
...     new = State(initial=True)
...     reserved = State(final=True)
...     reserve = new.to(reserved).run(reserve, undo=release)
>>> class V2(Saga[Cart, Data]):
...     name = "checkout"
...     version = 2
...     new = State(initial=True)
...     screened = State()
...     reserved = State(final=True)
...     screen = new.to(screened).run(screen, read_only=True)
...     reserve = screened.to(reserved).run(reserve, undo=release)
>>> changes = diff(V1.definition, V2.definition)
>>> changes.node("screened").change, changes.edge("reserve").change, changes.edge("reserve").notes
(<Change.ADDED: 'added'>, <Change.CHANGED: 'changed'>, ('source new \u2192 screened',))
>>> changes.heading
'checkout v1 \u2192 v2'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from statesaga.definition import Definition, MigrationDef
from statesaga.diagram.labels import duration
from statesaga.diagram.model import (
    Change,
    Diagram,
    Edge,
    EdgeKind,
    Mode,
    Node,
    definition_of,
    from_definition,
)

__all__ = ["diff"]

_Item = TypeVar("_Item", Node, Edge)

_ARROW = "\u2192"


def _seconds(value: Any) -> str:
    return "none" if value is None else duration(value)


def _text(value: Any) -> str:
    return "none" if value is None else str(value)


# (field, how a reviewer calls it, how its value reads); derived fields are left out
_NODE_VALUES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("timeout", "timeout", _seconds),
    ("timeout_of", "timeout computed by", _text),
    ("events", "waits for", lambda events: ", ".join(events) or "nothing"),
)
_NODE_FLAGS = (
    ("initial", "initial"),
    ("final", "final"),
    ("forward_only", "after the pivot"),
)
_EDGE_VALUES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("kind", "kind", _text),
    ("step", "step", _text),
    ("guard", "guard", _text),
    ("event", "event", _text),
    ("payload", "payload", _text),
    ("timeout", "timeout", _seconds),
    ("timeout_of", "timeout computed by", _text),
    ("step_timeout", "step timeout", _seconds),
    ("attempts", "attempts", _text),
)
_EDGE_FLAGS = (
    ("pivot", "a pivot"),
    ("read_only", "read-only"),
    ("transactional", "transactional"),
    ("undo_on_failure", "undone when it fails"),
    ("void", "a void"),
)


def diff(
    old: Diagram | Definition | type,
    new: Diagram | Definition | type,
    *,
    since: str | None = None,
) -> Diagram:
    """One diagram of ``new`` with what changed since ``old`` marked.

    Args:
        old: the earlier version (a diagram, a definition or a Saga class).
        new: the later version.
        since: what ``old`` is, for the title (a git revision, say).
    """
    before = old if isinstance(old, Diagram) else from_definition(old)
    after = new if isinstance(new, Diagram) else from_definition(new)
    nodes = _merge(before.nodes, after.nodes, _node_changes)
    edges = _merge(before.edges, after.edges, _edge_changes)
    plan = None
    if not isinstance(new, Diagram) and before.saga == after.saga:
        plan = definition_of(new).migrations.get(before.version)
    if plan is not None:
        edges += _migration_edges(plan)
    if before.saga != after.saga:
        title = f"{before.saga} v{before.version} {_ARROW} {after.saga} v{after.version}"
    elif before.version != after.version:
        title = f"{after.saga} v{before.version} {_ARROW} v{after.version}"
    else:
        title = f"{after.saga} v{after.version}"
    notes = []
    if since is not None:
        notes.append(f"changes since {since}")
    notes.append(_summary(nodes, edges))
    if before.deadline != after.deadline:
        notes.append(f"deadline {_seconds(before.deadline)} {_ARROW} {_seconds(after.deadline)}")
    if plan is not None:
        notes.append(_migration_note(plan))
    return attrs.evolve(
        after, nodes=nodes, edges=edges, mode=Mode.DIFF, title=title, notes=tuple(notes)
    )


def _migration_edges(plan: MigrationDef) -> tuple[Edge, ...]:
    """One edge per old state whose runs land in a state of another name."""
    return tuple(
        Edge(
            f"{old}.migrates",
            EdgeKind.MIGRATION,
            old,
            new,
            notes=(f"v{plan.from_version} runs move here",),
        )
        for old, new in plan.states.items()
        if old != new
    )


def _migration_note(plan: MigrationDef) -> str:
    moved = [f"{old} {_ARROW} {new}" for old, new in plan.states.items() if old != new]
    where = ", ".join(moved) if moved else "to the states of the same names"
    note = f"v{plan.from_version} runs migrate {where}"
    if plan.context_name is not None:
        note += f" (context: {plan.context_name})"
    return note


def _merge(
    before: tuple[_Item, ...],
    after: tuple[_Item, ...],
    changes: Callable[[_Item, _Item], list[str]],
) -> tuple[_Item, ...]:
    old = {item.id: item for item in before}
    new_ids = {item.id for item in after}
    merged: list[_Item] = []
    for item in after:
        previous = old.get(item.id)
        if previous is None:
            merged.append(attrs.evolve(item, change=Change.ADDED))
            continue
        notes = changes(previous, item)
        merged.append(
            attrs.evolve(item, change=Change.CHANGED, notes=tuple(notes)) if notes else item
        )
    merged += [
        attrs.evolve(item, change=Change.REMOVED) for item in before if item.id not in new_ids
    ]
    return tuple(merged)


def _fields(
    before: object,
    after: object,
    values: tuple[tuple[str, str, Callable[[Any], str]], ...],
    flags: tuple[tuple[str, str], ...],
) -> list[str]:
    notes = []
    for field, name in flags:
        was, now = getattr(before, field), getattr(after, field)
        if was != now:
            notes.append(f"now {name}" if now else f"no longer {name}")
    for field, name, show in values:
        was, now = getattr(before, field), getattr(after, field)
        if was != now:
            notes.append(f"{name} {show(was)} {_ARROW} {show(now)}")
    return notes


def _node_changes(before: Node, after: Node) -> list[str]:
    return _fields(before, after, _NODE_VALUES, _NODE_FLAGS)


def _edge_changes(before: Edge, after: Edge) -> list[str]:
    notes = []
    if before.source != after.source:
        notes.append(f"source {before.source} {_ARROW} {after.source}")
    if before.target != after.target:
        notes.append(f"target {before.target} {_ARROW} {after.target}")
    return notes + _fields(before, after, _EDGE_VALUES, _EDGE_FLAGS)


def _summary(nodes: tuple[Node, ...], edges: tuple[Edge, ...]) -> str:
    def count(items: tuple[Node, ...] | tuple[Edge, ...], what: str) -> str:
        tally = {change: sum(item.change is change for item in items) for change in Change}
        return (
            f"{what} +{tally[Change.ADDED]} \u2212{tally[Change.REMOVED]} ~{tally[Change.CHANGED]}"
        )

    return f"{count(nodes, 'states')}, {count(edges, 'edges')}"
