"""The diagram model: what a saga definition looks like as a drawing.

A :class:`Diagram` is a small, renderer-neutral graph extracted from a
:class:`~statesaga.Definition`: its states and the three terminal outcomes as
:class:`Node` s, its transitions, compensations and outcome paths as
:class:`Edge` s. Renderers (:mod:`statesaga.diagram.dot`,
:mod:`statesaga.diagram.mermaid`) turn it into text; the instance overlay and
the diff return a new ``Diagram`` whose nodes and edges carry marks.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.frozen
... class Order:
...     order_id: str
>>> @attrs.frozen
... class Paid:
...     charged: bool = False
>>> def charge(ctx): ...
>>> def refund(ctx): ...
>>> class Pay(Saga[Order, Paid]):
...     name = "pay"
...     new = State(initial=True)
...     paid = State(final=True)
...     charge = new.to(paid).run(charge, undo=refund)
>>> d = from_definition(Pay.definition)
>>> for e in d.edges:
...     print(e.id, e.kind.value, e.source, e.target)
charge step new paid
charge.undo compensation paid new
new.compensated outcome new (compensated)
>>> d.node("paid").outcome
<Outcome.COMPLETED: 'completed'>
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

import attrs

from statesaga.definition import Definition, TransitionDef
from statesaga.diagram.errors import DiagramError

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
    "definition_of",
    "from_definition",
]

#: the node ids of the implicit outcomes; parentheses keep them apart from state names
COMPENSATED = "(compensated)"
FAILED = "(failed)"


class NodeKind(enum.StrEnum):
    """A state of the saga, or one of its implicit terminal outcomes."""

    STATE = "state"
    OUTCOME = "outcome"


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
    it waits (seconds); ``forward_only`` marks states after a pivot, where
    nothing is compensated. ``trace``, ``change`` and ``notes`` are set by the
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
    (as in its errors), and outcome paths are ``<state>.compensated``,
    ``<state>.timeout`` and ``<state>.failed``. ``step`` is the function the
    edge runs: for a compensation, the compensation itself, with ``undoes``
    naming the step it undoes, and ``never_runs`` set when no later step can
    fail (the step leads into a final state).
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
    never_runs: bool = False
    step_timeout: float | None = None
    attempts: int | None = None
    trace: Trace | None = None
    change: Change | None = None
    notes: tuple[str, ...] = ()


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
        """The edge with that id (``KeyError`` if there is none)."""
        for edge in self.edges:
            if edge.id == edge_id:
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


def from_definition(saga: Definition | type) -> Diagram:
    """Extract the diagram of a saga definition (a ``Definition`` or a ``Saga`` class)."""
    definition = definition_of(saga)
    transitions = list(definition.transitions.values())
    after_pivot = _after_pivot(transitions)
    undo_free = _undo_free(definition.initial, transitions)
    taken_on_timeout = {t.source for t in transitions if t.on_timeout}
    nodes: list[Node] = []
    for state in definition.states.values():
        nodes.append(
            Node(
                id=state.name,
                label=state.name,
                initial=state.initial,
                final=state.final,
                outcome=Outcome.COMPLETED if state.final else None,
                timeout=state.timeout,
                events=definition.events_in(state.name),
                forward_only=state.name in after_pivot,
            )
        )
    nodes.append(Node(COMPENSATED, "compensated", NodeKind.OUTCOME, outcome=Outcome.COMPENSATED))
    nodes.append(Node(FAILED, "failed", NodeKind.OUTCOME, outcome=Outcome.FAILED))

    edges = [_edge(definition, t, transitions) for t in transitions]
    edges += [_compensation(t, definition) for t in transitions if t.compensatable]
    for state in definition.states.values():
        if state.final:
            continue
        name = state.name
        if state.timeout is not None and name not in taken_on_timeout:
            outcome = FAILED if name in after_pivot else COMPENSATED
            edges.append(
                Edge(f"{name}.timeout", EdgeKind.TIMEOUT, name, outcome, timeout=state.timeout)
            )
        if name in undo_free:
            edges.append(Edge(f"{name}.compensated", EdgeKind.OUTCOME, name, COMPENSATED))
        elif name in after_pivot:
            edges.append(Edge(f"{name}.failed", EdgeKind.OUTCOME, name, FAILED))
    return Diagram(
        saga=definition.name,
        version=definition.version,
        nodes=tuple(nodes),
        edges=tuple(edges),
        deadline=definition.deadline,
    )


def definition_of(saga: Definition | type) -> Definition:
    """The definition of a ``Saga`` class, or the definition itself."""
    found = saga if isinstance(saga, Definition) else getattr(saga, "definition", None)
    if not isinstance(found, Definition):
        raise DiagramError(f"{saga!r} is not a saga: pass a Saga class or its .definition")
    return found


def _edge(definition: Definition, t: TransitionDef, transitions: list[TransitionDef]) -> Edge:
    kind = EdgeKind.EVENT if t.event else EdgeKind.TIMEOUT if t.on_timeout else EdgeKind.STEP
    fallback = (
        t.automatic
        and t.guard is None
        and any(o.automatic and o.guard is not None for o in transitions if o.source == t.source)
    )
    step = t.step
    return Edge(
        id=t.name,
        kind=kind,
        source=t.source,
        target=t.target,
        transition=t.name,
        step=None if step is None else step.function_name,
        guard=t.guard_name,
        fallback=fallback,
        event=t.event,
        payload=None if t.payload_type is None else t.payload_type.__name__,
        timeout=definition.states[t.source].timeout if t.on_timeout else None,
        pivot=step is not None and step.pivot,
        read_only=step is not None and step.read_only,
        transactional=step is not None and step.transactional,
        step_timeout=None if step is None else step.timeout,
        attempts=None if step is None else step.retry.attempts,
    )


def _compensation(t: TransitionDef, definition: Definition) -> Edge:
    assert t.step is not None
    # a compensation runs when a later step fails; into a final state, no step follows
    never_runs = definition.states[t.target].final and not t.step.compensate_on_failure
    return Edge(
        id=f"{t.name}.undo",
        kind=EdgeKind.COMPENSATION,
        source=t.target,
        target=t.source,
        transition=t.name,
        step=t.step.compensation_name,
        undoes=t.step.function_name,
        undo_on_failure=t.step.compensate_on_failure,
        never_runs=never_runs,
        step_timeout=t.step.timeout,
        attempts=t.step.compensation_retry.attempts,
    )


def _reachable(starts: Iterable[str], edges: list[TransitionDef]) -> set[str]:
    seen = set(starts)
    queue = deque(seen)
    while queue:
        state = queue.popleft()
        for t in edges:
            if t.source == state and t.target not in seen:
                seen.add(t.target)
                queue.append(t.target)
    return seen


def _after_pivot(transitions: list[TransitionDef]) -> set[str]:
    """States a run can be in once a pivot step has succeeded."""
    pivots = [t.target for t in transitions if t.step is not None and t.step.pivot]
    return _reachable(pivots, transitions) if pivots else set()


def _undo_free(initial: str, transitions: list[TransitionDef]) -> set[str]:
    """States reached without a step to undo: where compensating ends, and failing
    early leaves nothing to undo."""
    plain = [
        t
        for t in transitions
        if t.step is None or (t.step.compensation is None and not t.step.pivot)
    ]
    return _reachable([initial], plain)
