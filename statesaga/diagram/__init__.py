"""Diagrams of sagas: Graphviz and Mermaid drawings, a run's path, and changes for review.

A saga is extracted into a small model (:func:`from_definition`), which
renderers turn into DOT (:func:`to_dot`), Mermaid ``stateDiagram-v2``
(:func:`to_mermaid`) or, through Graphviz's ``dot``, SVG, PNG and PDF
(:func:`render`). :func:`overlay` marks one run's path on it; :func:`diff`
marks what changed between two versions, :func:`definition_at` loads a
saga as it was at a git revision, and :func:`markdown_section` wraps a
chart for a pull-request comment. The ``statesaga diagram`` command does all
of this from the shell.

>>> from statesaga.diagram import from_definition, to_mermaid
>>> from statesaga._examples import Fulfil
>>> drawing = from_definition(Fulfil)
>>> [state.id for state in drawing.states][:3]
['new', 'validated', 'reserved']
>>> "stateDiagram-v2" in to_mermaid(drawing).splitlines()
True

Nothing here imports the ``graphviz`` package until DOT is drawn.
"""

from __future__ import annotations

from statesaga.diagram.diff import diff
from statesaga.diagram.dot import render, to_dot
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.mermaid import to_mermaid
from statesaga.diagram.model import (
    Change,
    Diagram,
    Edge,
    EdgeKind,
    Mode,
    Node,
    NodeKind,
    Outcome,
    Trace,
    from_definition,
)
from statesaga.diagram.output import FORMATS, TEXT_FORMATS, check_file, draw, format_for
from statesaga.diagram.overlay import overlay
from statesaga.diagram.review import markdown_section
from statesaga.diagram.revision import definition_at

__all__ = [
    # the model
    "from_definition",
    "Diagram",
    "Node",
    "Edge",
    "NodeKind",
    "EdgeKind",
    "Outcome",
    "Trace",
    "Change",
    "Mode",
    # renderers
    "to_dot",
    "to_mermaid",
    "render",
    "draw",
    "FORMATS",
    "TEXT_FORMATS",
    "format_for",
    "markdown_section",
    "check_file",
    # overlay and diff
    "overlay",
    "diff",
    "definition_at",
    # errors
    "DiagramError",
]
