"""Sagas inside sagas, for the kit: a definition's family, the names of its children's
steps in fault plans, and the invariants that tie a parent to its child runs.

A child saga's steps are named ``<child saga>/<transition>`` in plans and the
journal (``book-package/rent_car``), so a plan can fail, crash or time out a
child's step as it does the parent's: a crash in the child's first step is a
crash between starting the child and the parent recording it.

>>> child_step_name("book-package", "rent_car")
'book-package/rent_car'
"""

from __future__ import annotations

from statesaga.core import Status
from statesaga.definition import Definition, children_of
from statesaga.run import Run

__all__ = ["check_family", "child_step_name", "family", "step_names"]


def child_step_name(saga: str, transition: str) -> str:
    """How plans and the journal name a child saga's step."""
    return f"{saga}/{transition}"


def family(definition: Definition) -> dict[str, Definition]:
    """The definition and every saga its child steps start, down the tree, by name."""
    found = {definition.name: definition}
    todo = [definition]
    while todo:
        for child in children_of(todo.pop()):
            if child.name not in found:
                found[child.name] = child
                todo.append(child)
    return found


def step_names(root: Definition, definition: Definition, name: str) -> str:
    """A step's name in plans: its transition's, prefixed by its saga's below the root."""
    return name if definition is root else child_step_name(definition.name, name)


def check_family(runs: tuple[Run, ...]) -> list[str]:
    """A parent and its children agree: each child's parent is there, with its correlation
    id; a completed parent's children all completed; a compensated parent left no child
    completed or open (each was compensated with it)."""
    by_id = {run.id: run for run in runs}
    problems = []
    for child in runs:
        if child.parent_id is None:
            continue
        parent = by_id.get(child.parent_id)
        where = f"child run {child.id[:8]} ({child.saga})"
        if parent is None:
            problems.append(f"{where}: its parent {child.parent_id[:8]} is not among the runs")
            continue
        if parent.correlation_id != child.correlation_id:
            problems.append(f"{where}: its correlation id is not its parent's")
        if parent.status is Status.COMPLETED and child.status is not Status.COMPLETED:
            problems.append(f"{where} is {child.status} but its parent completed")
        if parent.status is Status.COMPENSATED and (
            child.status is Status.COMPLETED or child.status.is_open
        ):
            problems.append(f"{where} is {child.status} but its parent was compensated")
    return problems
