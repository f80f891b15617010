"""The colours of the visual language, shared by every renderer.

One palette, so a reviewer who learned it on an SVG reads the Mermaid view
in a pull request the same way.
"""

from __future__ import annotations

from typing import NamedTuple

from statesaga.diagram.model import Change, Outcome

__all__ = [
    "CHANGE",
    "COMPENSATION",
    "EVENT",
    "FORWARD_ONLY",
    "INK",
    "MIGRATION",
    "MUTED",
    "OUTCOME",
    "PIVOT",
    "TRACE_CURRENT",
    "TRACE_FAILED",
    "TRACE_PATH",
    "TRACE_UNDONE",
    "WAITING",
    "Paint",
]


class Paint(NamedTuple):
    """A stroke (border, line and text) colour and a fill colour."""

    stroke: str
    fill: str


INK = Paint("#37474f", "#ffffff")
"""Ordinary states and forward steps."""
WAITING = Paint("#1565c0", "#e3f2fd")
"""Waiting states."""
EVENT = Paint("#1565c0", "#e3f2fd")
"""Event and timeout edges."""
COMPENSATION = Paint("#e65100", "#fff3e0")
"""Compensations (undo edges)."""
PIVOT = Paint("#6a1b9a", "#f3e5f5")
"""The pivot step."""
FORWARD_ONLY = Paint("#6a1b9a", "#f8f0fb")
"""States after the pivot."""
OUTCOME = {
    Outcome.COMPLETED: Paint("#2e7d32", "#e8f5e9"),
    Outcome.COMPENSATED: Paint("#b26a00", "#fff8e1"),
    Outcome.FAILED: Paint("#c62828", "#ffebee"),
}
"""The terminal outcomes."""

MUTED = Paint("#b0bec5", "#ffffff")
"""What an overlay or a diff does not highlight."""
TRACE_PATH = Paint("#1565c0", "#e3f2fd")
"""States visited and transitions taken by the run."""
TRACE_CURRENT = Paint("#0d47a1", "#fff59d")
"""Where the run is now."""
TRACE_FAILED = Paint("#c62828", "#ffebee")
"""The step that failed."""
TRACE_UNDONE = Paint("#e65100", "#fff3e0")
"""Compensations that ran."""
CHANGE = {
    Change.ADDED: Paint("#2e7d32", "#e8f5e9"),
    Change.REMOVED: Paint("#c62828", "#ffebee"),
    Change.CHANGED: Paint("#ef6c00", "#fff3e0"),
}
"""The diff's marks."""
MIGRATION = Paint("#00838f", "#e0f7fa")
"""A diff's migration edges: where runs of the older version move."""
