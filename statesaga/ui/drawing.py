"""Diagrams for the pages: inline SVG from Graphviz, or Mermaid source when ``dot`` is missing.

The SVG is drawn by Graphviz from the diagram model (``statesaga.diagram``),
whose labels Graphviz escapes; the XML prolog is dropped and the fixed size
removed so that the drawing scales with the page.
"""

from __future__ import annotations

import functools
import re
import shutil

import attrs
from markupsafe import Markup

from statesaga import diagram as diagrams
from statesaga.definition import Definition
from statesaga.run import Run

__all__ = ["Drawing", "draw", "run_drawing", "saga_drawing"]

_SIZE = re.compile(r'\s(width|height)="[^"]*pt"')


@attrs.frozen
class Drawing:
    """What a page shows of a diagram: an SVG, or else Mermaid source and why."""

    svg: Markup | None
    mermaid: str
    note: str | None = None


def saga_drawing(definition: Definition) -> Drawing:
    """The saga's diagram (cached: a definition never changes)."""
    return _cached_saga(definition)


@functools.lru_cache(maxsize=64)
def _cached_saga(definition: Definition) -> Drawing:
    return draw(diagrams.from_definition(definition))


def run_drawing(definition: Definition, run: Run) -> Drawing:
    """The saga's diagram with the run's path on it."""
    try:
        drawn = diagrams.overlay(diagrams.from_definition(definition), run)
    except diagrams.DiagramError as error:
        plain = draw(diagrams.from_definition(definition))
        return attrs.evolve(plain, note=f"the run's path cannot be drawn: {error}")
    return draw(drawn)


def draw(drawn: diagrams.Diagram) -> Drawing:
    """Any diagram (a saga, a run's path, a diff) as the page shows it."""
    mermaid = diagrams.to_mermaid(drawn)
    if shutil.which("dot") is None:
        return Drawing(
            None,
            mermaid,
            "Graphviz's dot is not installed here, so the diagram is shown as Mermaid source "
            "(paste it into a Markdown file on GitHub or GitLab, or install Graphviz to draw it).",
        )
    try:
        svg = diagrams.render(drawn, "svg").decode()
    except diagrams.DiagramError as error:
        return Drawing(None, mermaid, f"the diagram could not be drawn ({error}); Mermaid source:")
    start = svg.find("<svg")
    svg = _SIZE.sub("", svg[start:], count=2)
    return Drawing(Markup(svg), mermaid)  # Graphviz escapes every label
