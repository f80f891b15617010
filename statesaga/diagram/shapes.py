"""The shapes of a diagram: its nodes, edges and their kinds and marks.

Renderer-neutral values; :mod:`statesaga.diagram.model` builds a
:class:`Diagram` of them from a saga's definition (and re-exports them).

>>> node = Node("paid", "paid", NodeKind.STATE, outcome=Outcome.COMPLETED)
>>> node.outcome.value
'completed'
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "COMPENSATED",
    "FAILED",
    "Change",
    "Diagram",
    "Edge",
    "EdgeKind",
    "Mode",
    "Node",
    "NodeKind",
    "Outcome",
    "Trace",
]

#: the node ids of the implicit outcomes; parentheses keep them apart from state names
COMPENSATED = "(compensated)"
FAILED = "(failed)"


class NodeKind(enum.StrEnum):
    """A state of the saga, or one of its implicit terminal outcomes."""

    STATE = "state"
    OUTCOME = "outcome"
    FORK = "fork"
    """The bar where a parallel transition's branches start (``<transition>.fork``)."""
    JOIN = "join"
    """The bar where they join (``<transition>.join``)."""


class Outcome(enum.StrEnum):
    """How a run ends: a final state (completed), compensated, or failed."""

    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"


class EdgeKind(enum.StrEnum):
    """What an edge stands for."""

    STEP = "step"
    """An automatic transition (it runs its step, if it has one, when taken)."""
    EVENT = "event"
    """A transition taken when an event arrives."""
    TIMEOUT = "timeout"
    """Taken when a waiting state's timeout passes."""
    COMPENSATION = "compensation"
    """A step's compensation, from the step's target back to its source."""
    OUTCOME = "outcome"
    """Where a run ends compensated (nothing left to undo) or failed (past the pivot)."""
    MIGRATION = "migration"
    """A diff's declared migration: runs of the older version in the source state move to
    the target state of the newer one."""


class Trace(enum.StrEnum):
    """Marks of the instance overlay."""

    VISITED = "visited"
    """A state the run passed through."""
    CURRENT = "current"
    """Where the run is now (a state, or its terminal outcome)."""
    TAKEN = "taken"
    """A transition the run took, or a compensation that ran."""
    FAILED = "failed"
    """The step (or compensation) whose failure stopped the run's way forward."""


class Change(enum.StrEnum):
    """Marks of the diff."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


class Mode(enum.StrEnum):
    """What a diagram shows, and so which legend it needs."""

    DEFINITION = "definition"
    INSTANCE = "instance"
    DIFF = "diff"


@attrs.frozen
class Node:
    """A state, or an implicit outcome (``compensated``, ``failed``).

    ``events`` are the events a waiting state accepts and ``timeout`` how long
    it waits (seconds), or ``timeout_of`` the function computing each run's wait;
    ``forward_only`` marks states after a pivot, where
    nothing is compensated; ``summary`` says what an outcome means for the
    paths that lead to it. ``trace``, ``change`` and ``notes`` are set by the
    overlay and the diff.
    """

    id: str
    label: str
    kind: NodeKind = NodeKind.STATE
    initial: bool = False
    final: bool = False
    outcome: Outcome | None = None
    timeout: float | None = None
    events: tuple[str, ...] = ()
    forward_only: bool = False
    timeout_of: str | None = None
    summary: str | None = None
    trace: Trace | None = None
    change: Change | None = None
    notes: tuple[str, ...] = ()

    @property
    def waiting(self) -> bool:
        """The state waits for events."""
        return bool(self.events)


@attrs.frozen
class Edge:
    """A transition, a compensation, or a path to an outcome.

    ``id`` is the transition's name; a compensation's is ``<transition>.undo``
    (as in its errors and metrics), and outcome paths are ``<state>.compensated``,
    ``<state>.timeout`` and ``<state>.failed``. ``step`` is the function the
    edge runs: for a compensation, the compensation itself, with ``undoes``
    naming the transition it undoes (a pivot's void is one, with ``void`` set).
    ``timeout_of`` names the function computing a timeout edge's wait per run.
    Compensations that run the same function
    from the same state back to the same place are one edge, whose ``merged``
    holds the other compensations' ids (``paid.undo`` beside ``approved.undo``).
    """

    id: str
    kind: EdgeKind
    source: str
    target: str
    transition: str | None = None
    step: str | None = None
    undoes: str | None = None
    guard: str | None = None
    fallback: bool = False
    event: str | None = None
    payload: str | None = None
    timeout: float | None = None
    pivot: bool = False
    read_only: bool = False
    transactional: bool = False
    undo_on_failure: bool = False
    merged: tuple[str, ...] = ()
    timeout_of: str | None = None
    void: bool = False
    step_timeout: float | None = None
    attempts: int | None = None
    trace: Trace | None = None
    change: Change | None = None
    notes: tuple[str, ...] = ()
    #: a child step's saga, as ``name v<version>`` (its ``step`` makes the child's input)
    child: str | None = None


@attrs.frozen
class Diagram:
    """A saga as a drawing: nodes and edges in declaration order, plus a title.

    ``notes`` are lines under the title (the run an overlay shows, what a diff
    compares); ``mode`` tells renderers which legend to draw.
    """

    saga: str
    version: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    deadline: float | None = None
    mode: Mode = Mode.DEFINITION
    title: str = ""
    notes: tuple[str, ...] = ()

    def node(self, node_id: str) -> Node:
        """The node with that id (``KeyError`` if there is none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def edge(self, edge_id: str) -> Edge:
        """The edge with that id, or that merged it (``KeyError`` if there is none)."""
        for edge in self.edges:
            if edge.id == edge_id or edge_id in edge.merged:
                return edge
        raise KeyError(edge_id)

    @property
    def states(self) -> tuple[Node, ...]:
        """The saga's own states (without the implicit outcomes)."""
        return tuple(n for n in self.nodes if n.kind is NodeKind.STATE)

    @property
    def heading(self) -> str:
        """The title, or ``name vN``."""
        return self.title or f"{self.saga} v{self.version}"
