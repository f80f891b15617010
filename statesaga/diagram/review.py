"""A Markdown section for a pull request: the Mermaid chart, with the changes in words.

``statesaga diagram SAGA --against main --format markdown`` prints it; a CI
step posts it as a comment, where GitHub and GitLab draw the ```` ```mermaid ````
block as-is. Under the chart a list says what changed, for readers of the
plain text and for screen readers.

>>> import attrs
>>> from statesaga import Retry, Saga, State
>>> from statesaga.diagram import diff
>>> @attrs.frozen
... class Cart:
...     cart_id: str
>>> @attrs.frozen
... class Data:
...     done: bool = False
>>> def reserve(ctx): ...
>>> def release(ctx): ...
>>> def notify(ctx): ...
>>> class V1(Saga[Cart, Data]):
...     name = "checkout"
...     new = State(initial=True)
...     reserved = State()
...     done = State(final=True)
...     reserve = new.to(reserved).run(reserve, undo=release)
...     finish = reserved.to(done).run(notify, read_only=True)
>>> class V2(Saga[Cart, Data]):
...     name = "checkout"
...     version = 2
...     new = State(initial=True)
...     reserved = State()
...     done = State(final=True)
...     reserve = new.to(reserved).run(reserve, undo=release, retry=Retry(attempts=5))
...     finish = reserved.to(done).run(notify, read_only=True)
>>> text = markdown_section(diff(V1, V2, since="main"))
>>> print(text.splitlines()[0])
### checkout v1 → v2
>>> print(text.splitlines()[2].split(". ")[1])
Green is added, orange changed, red removed (dashed), grey unchanged.
>>> print(text.split("```\\n", 1)[1].strip())
- changed `reserve` (new → reserved): attempts 3 → 5
"""

from __future__ import annotations

from statesaga.diagram.labels import edge_name
from statesaga.diagram.mermaid import to_mermaid
from statesaga.diagram.model import Change, Diagram, Edge, Mode, Node, NodeKind

__all__ = ["markdown_section"]

_KEYS = {
    Mode.DEFINITION: (
        "Solid lines are steps, dashed orange lines their compensations (undo), dotted "
        "lines timeouts; a thick purple line is the pivot."
    ),
    Mode.INSTANCE: (
        "Blue is the run's path, red the step that failed, orange the compensations that "
        "ran, yellow where the run is now; grey it never reached."
    ),
    Mode.DIFF: "Green is added, orange changed, red removed (dashed), grey unchanged.",
}


def markdown_section(diagram: Diagram) -> str:
    """The diagram as a Markdown section: a heading, a line, the Mermaid chart and, for a
    diff, the list of changes (ends with a newline)."""
    lines = [f"### {diagram.heading}", ""]
    notes = list(diagram.notes)
    if diagram.mode is Mode.DIFF and notes and notes[0].startswith("changes since "):
        notes[0] = "C" + notes[0][1:] + ":"
        intro = " ".join([notes[0], ", ".join(notes[1:])]) + "."
    else:
        intro = ". ".join(notes) + "." if notes else ""
    lines += [" ".join(filter(None, [intro, _KEYS[diagram.mode]])), ""]
    lines += ["```mermaid", to_mermaid(diagram).rstrip("\n"), "```", ""]
    if diagram.mode is Mode.DIFF:
        names = {node.id: node.label for node in diagram.nodes}
        items: list[Node | Edge] = [*diagram.nodes, *diagram.edges]
        changes = [_change(item, names) for item in items if item.change]
        lines += changes or ["No state or edge changed."]
        lines.append("")
    return "\n".join(lines)


def _change(item: Node | Edge, names: dict[str, str]) -> str:
    assert item.change is not None
    if isinstance(item, Node):
        what = "outcome" if item.kind is NodeKind.OUTCOME else "state"
        text = f"- {item.change.value} {what} `{item.label}`"
    else:
        name = edge_name(item) or item.id
        source, target = names.get(item.source, item.source), names.get(item.target, item.target)
        text = f"- {item.change.value} `{name}` ({source} \u2192 {target})"
    if item.change is Change.CHANGED and item.notes:
        text += ": " + "; ".join(item.notes)
    return text
