"""What changed in a saga since a git revision, as ``statesaga diagram --against REV`` draws it.

The saga's module file is read at the revision with git (see
:func:`statesaga.diagram.definition_at`) and the two versions are drawn as
one diagram, with the list of changes beside it. A revision is taken only in
the plain forms git names commits by (``HEAD~1``, ``main``, ``v1.2``, a hash),
never as an option; one that does not exist, or a file that was not there
yet, gives a page that says so.

>>> revision_of("HEAD~1"), revision_of("--output=x") is None, revision_of("a b") is None
('HEAD~1', True, True)
"""

from __future__ import annotations

import re

import attrs

from statesaga import diagram as diagrams
from statesaga.definition import Definition
from statesaga.diagram.labels import edge_name
from statesaga.diagram.model import Diagram, Edge, Node, NodeKind
from statesaga.ui.drawing import Drawing, draw

__all__ = ["ChangeLine", "SagaDiff", "changes_of", "diff_of", "revision_of"]

# what git accepts as a revision name, without spaces, colons (``REV:path``) or options
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./~^@{}+-]{0,99}")


@attrs.frozen
class ChangeLine:
    """One change, for the page: ``added state 'paid'``, ``changed 'reserve' (a → b): ...``."""

    change: str
    what: str
    name: str
    detail: str


@attrs.frozen
class SagaDiff:
    """The diff's drawing, heading, notes and list of changes."""

    drawing: Drawing
    heading: str
    notes: tuple[str, ...]
    changes: tuple[ChangeLine, ...]


def revision_of(given: str | None) -> str | None:
    """``given`` if it reads as a git revision name, else ``None``."""
    text = (given or "").strip()
    return text if _REVISION.fullmatch(text) else None


def diff_of(definition: Definition, revision: str) -> SagaDiff:
    """``definition`` against its own source at ``revision``.

    Raises:
        DiagramError: git is missing, the file is not in a repository or not at
            ``revision``, the old source does not load, or it has no such class.
    """
    old = diagrams.definition_at(definition, revision)
    drawn = diagrams.diff(old, definition, since=revision)
    return SagaDiff(draw(drawn), drawn.heading, drawn.notes, changes_of(drawn))


def changes_of(drawn: Diagram) -> tuple[ChangeLine, ...]:
    """What a diff diagram marks as added, removed or changed, states first."""
    names = {node.id: node.label for node in drawn.nodes}
    items: list[Node | Edge] = [*drawn.nodes, *drawn.edges]
    lines = []
    for item in items:
        if item.change is None:
            continue
        detail = "; ".join(item.notes) if item.change is diagrams.Change.CHANGED else ""
        if isinstance(item, Node):
            what = "outcome" if item.kind is NodeKind.OUTCOME else "state"
            lines.append(ChangeLine(item.change.value, what, item.label, detail))
        else:
            source = names.get(item.source, item.source)
            target = names.get(item.target, item.target)
            edge = f"{edge_name(item) or item.id} ({source} \u2192 {target})"
            lines.append(ChangeLine(item.change.value, "edge", edge, detail))
    return tuple(lines)
