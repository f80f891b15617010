"""A run's family for ``statesaga show``: its parent (up to the root) and its child runs.

>>> from statesaga import Engine
>>> with Engine("sqlite://") as engine:
...     family_json(engine, "no-such-run") is None
True
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.tree import Tree

from statesaga.engine import Engine
from statesaga.errors import InstanceNotFound
from statesaga.run import Run

__all__ = ["family_json", "family_tree"]

#: how deep a tree of sagas inside sagas is drawn
_DEPTH = 20


def family_tree(engine: Engine, run: Run, status: Any) -> Tree | None:
    """The tree of sagas ``run`` belongs to, from its root down, ``run`` in bold;
    ``None`` when it has neither parent nor children. ``status`` colours a status."""
    root = _root(engine, run)
    if root.id == run.id and not engine.children(run.id):
        return None

    def label(member: Run) -> str:
        text = f"{member.saga} v{member.version} {member.id} {status(member.status.value)}"
        text += f" in {escape(member.state)}"
        return f"[bold]{text}[/] (this run)" if member.id == run.id else text

    tree = Tree(label(root), guide_style="dim")
    todo = [(tree, root, 0)]
    while todo:
        branch, member, depth = todo.pop(0)
        if depth >= _DEPTH:
            continue
        for child in engine.children(member.id):
            todo.append((branch.add(label(child)), child, depth + 1))
    return tree


def family_json(engine: Engine, instance_id: str) -> list[dict[str, Any]] | None:
    """A run's child runs as JSON, each with its own children (``None``: no such run)."""
    try:
        children = engine.children(instance_id)
    except InstanceNotFound:
        return None
    return [
        {
            "id": child.id,
            "saga": child.saga,
            "version": child.version,
            "status": child.status.value,
            "state": child.state,
            "children": family_json(engine, child.id) or [],
        }
        for child in children
    ]


def _root(engine: Engine, run: Run) -> Run:
    """The run's topmost ancestor that is still stored (itself, if it has no parent)."""
    root = run
    for _ in range(_DEPTH):
        if root.parent_id is None:
            break
        try:
            root = engine.get(root.parent_id)
        except InstanceNotFound:
            break
    return root
