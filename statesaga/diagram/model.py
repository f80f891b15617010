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
new.compensated outcome new (compensated)
>>> d.node("paid").outcome
<Outcome.COMPLETED: 'completed'>
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs

from statesaga.core import undo_name
from statesaga.definition import Definition, TransitionDef
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.shapes import (
    COMPENSATED,
    FAILED,
    Change,
    Diagram,
    Edge,
    EdgeKind,
    Mode,
    Node,
    NodeKind,
    Outcome,
    Trace,
)

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
    "drawn_nodes",
    "from_definition",
    "outcome_node",
]


def from_definition(saga: Definition | type) -> Diagram:
    """Extract the diagram of a saga definition (a ``Definition`` or a ``Saga`` class)."""
    definition = definition_of(saga)
    transitions = list(definition.transitions.values())
    after_pivot = _after_pivot(transitions)
    undo_free = _undo_free(definition.initial, transitions)
    taken_on_timeout = {t.source for t in transitions if t.on_timeout}
    states: list[Node] = []
    for state in definition.states.values():
        states.append(
            Node(
                id=state.name,
                label=state.name,
                initial=state.initial,
                final=state.final,
                outcome=Outcome.COMPLETED if state.final else None,
                timeout=state.timeout,
                events=definition.events_in(state.name),
                forward_only=state.name in after_pivot,
                timeout_of=state.timeout_name,
            )
        )

    edges: list[Edge] = []
    bars: list[Node] = []
    for t in transitions:
        if t.parallel is None:
            edges.append(_edge(definition, t, transitions))
            continue
        fork, join = _fork(t, _edge(definition, t, transitions))
        bars += fork
        edges += join
    edges += _compensations(definition, transitions)
    for state in definition.states.values():
        if state.final:
            continue
        name = state.name
        if state.timed and name not in taken_on_timeout:
            # compensating starts here: drawn to where the first undo leaves from
            if name in after_pivot:
                lands = FAILED
            elif name in undo_free:
                lands = COMPENSATED
            else:
                lands = _landing(name, transitions, definition.initial)
            edges.append(
                Edge(
                    f"{name}.timeout",
                    EdgeKind.TIMEOUT,
                    name,
                    lands,
                    timeout=state.timeout,
                    timeout_of=state.timeout_name,
                )
            )
        if name in undo_free:
            edges.append(Edge(f"{name}.compensated", EdgeKind.OUTCOME, name, COMPENSATED))
        elif name in after_pivot:
            edges.append(Edge(f"{name}.failed", EdgeKind.OUTCOME, name, FAILED))
    return Diagram(
        saga=definition.name,
        version=definition.version,
        nodes=(*states, *bars, *_outcomes(edges)),
        edges=tuple(edges),
        deadline=definition.deadline,
    )


def drawn_nodes(diagram: Diagram) -> tuple[Node, ...]:
    """The nodes a drawing shows: the states, and the outcomes something leads to or marks."""
    targets = {edge.target for edge in diagram.edges}
    return tuple(
        n
        for n in diagram.nodes
        if n.kind is NodeKind.STATE or n.id in targets or n.trace or n.change
    )


def outcome_node(outcome: Outcome, summary: str) -> Node:
    """The node of an implicit outcome (``compensated`` or ``failed``)."""
    node_id = COMPENSATED if outcome is Outcome.COMPENSATED else FAILED
    return Node(node_id, outcome.value, NodeKind.OUTCOME, outcome=outcome, summary=summary)


def _outcomes(edges: list[Edge]) -> list[Node]:
    """The outcomes some edge leads to: a box nothing points at explains nothing."""
    targets = {edge.target for edge in edges}
    nodes = []
    if COMPENSATED in targets:
        nodes.append(outcome_node(Outcome.COMPENSATED, "every done step undone"))
    if FAILED in targets:
        timeouts = any(e.target == FAILED and e.kind is EdgeKind.TIMEOUT for e in edges)
        why = "retries or the wait ran out" if timeouts else "retries ran out"
        nodes.append(outcome_node(Outcome.FAILED, f"{why} after the pivot"))
    return nodes


def definition_of(saga: Definition | type) -> Definition:
    """The definition of a ``Saga`` class, or the definition itself."""
    found = saga if isinstance(saga, Definition) else getattr(saga, "definition", None)
    if not isinstance(found, Definition):
        raise DiagramError(f"{saga!r} is not a saga: pass a Saga class or its .definition")
    return found


def _edge(definition: Definition, t: TransitionDef, transitions: list[TransitionDef]) -> Edge:
    kind = EdgeKind.EVENT if t.event else EdgeKind.TIMEOUT if t.on_timeout else EdgeKind.STEP
    # the unguarded edge beside guarded ones (automatic, or taking the same event) is the else
    fallback = t.guard is None and any(
        o.guard is not None and o.automatic == t.automatic and o.event == t.event
        for o in transitions
        if o.source == t.source and not o.on_timeout
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
        timeout_of=definition.states[t.source].timeout_name if t.on_timeout else None,
        pivot=step is not None and step.pivot,
        read_only=step is not None and step.read_only,
        transactional=step is not None and step.transactional,
        step_timeout=None if step is None else step.timeout,
        attempts=None if step is None else step.retry.attempts,
        child=None
        if step is None or step.child is None
        else f"{step.child.definition.name} v{step.child.definition.version}",
    )


def _fork(t: TransitionDef, into: Edge) -> tuple[list[Node], list[Edge]]:
    """A parallel transition: its edge into the fork bar, one edge per branch from the fork
    bar to the join bar (named after its first step, its steps in order), and the join bar
    into the target."""
    assert t.parallel is not None
    fork, join = f"{t.name}.fork", f"{t.name}.join"
    edges = [attrs.evolve(into, target=fork)]
    for branch in t.parallel.branches:
        steps = [s.step for s in branch.steps if s.step is not None]
        one = steps[0] if len(steps) == 1 else None
        edges.append(
            Edge(
                id=branch.steps[0].name,
                kind=EdgeKind.STEP,
                source=fork,
                target=join,
                transition=f"{t.name}.{branch.name}",
                step=", then ".join(s.function_name for s in steps),
                read_only=all(s.read_only for s in steps),
                step_timeout=None if one is None else one.timeout,
                attempts=None if one is None else one.retry.attempts,
                merged=tuple(s.name for s in branch.steps[1:]),
            )
        )
    edges.append(Edge(f"{t.name}.join", EdgeKind.STEP, join, t.target))
    return [Node(fork, "", NodeKind.FORK), Node(join, "", NodeKind.JOIN)], edges


def _branch_steps(transitions: list[TransitionDef]) -> list[TransitionDef]:
    """Branch steps as steps from their fork's source to its target: their compensations
    are drawn along the fork, like any step's."""
    return [
        attrs.evolve(step, target=t.target)
        for t in transitions
        if t.parallel is not None
        for step in t.parallel.steps
    ]


def _compensations(definition: Definition, transitions: list[TransitionDef]) -> list[Edge]:
    """One edge per compensation: from a step's target back to where compensating goes on.

    A compensation that can never run (its step leads into a final state, so
    nothing can fail after it) is left out. Compensations that run the same
    function from the same state and land in the same place are one edge.
    """
    edges: dict[tuple[str, str, str | None], Edge] = {}
    for t in transitions + _branch_steps(transitions):
        if t.step is not None and t.step.void is not None:
            # a pivot's void: drawn back along the pivot, run only if the pivot fails
            edges[(t.target, t.source, f"{t.name}.void")] = Edge(
                id=f"{t.name}.undo",
                kind=EdgeKind.COMPENSATION,
                source=t.target,
                target=_landing(t.source, transitions, definition.initial),
                transition=t.name,
                step=t.step.void_name,
                undoes=t.name,
                void=True,
                step_timeout=t.step.timeout,
                attempts=t.step.compensation_retry.attempts,
            )
            continue
        if not t.compensatable or t.step is None:
            continue
        if definition.states[t.target].final and not t.step.compensate_on_failure:
            continue
        lands = _landing(t.source, transitions, definition.initial)
        key = (t.target, lands, t.step.compensation_name)
        found = edges.get(key)
        if found is not None:
            edges[key] = attrs.evolve(found, merged=(*found.merged, undo_name(t.name)))
            continue
        edges[key] = Edge(
            id=undo_name(t.name),
            kind=EdgeKind.COMPENSATION,
            source=t.target,
            target=lands,
            transition=t.name,
            step=t.step.compensation_name,
            undoes=t.name,
            undo_on_failure=t.step.compensate_on_failure,
            step_timeout=t.step.timeout,
            attempts=t.step.compensation_retry.attempts,
        )
    return list(edges.values())


def _landing(state: str, transitions: list[TransitionDef], initial: str) -> str:
    """Where compensating goes on from ``state``: back along the one step-less way into it.

    A transition without a step has nothing to undo, so an undo that lands in
    a state reached only that way goes on from the state before it (a waiting
    state's undo goes on from where the wait began).
    """
    seen = {state}
    while state != initial:
        into = [t for t in transitions if t.target == state]
        if len(into) != 1 or into[0].step or into[0].parallel or into[0].source in seen:
            break
        state = into[0].source
        seen.add(state)
    return state


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
        if (t.step is None and not any(s.compensatable for s in _branch_steps([t])))
        or (t.step is not None and t.step.compensation is None and not t.step.pivot)
    ]
    return _reachable([initial], plain)
