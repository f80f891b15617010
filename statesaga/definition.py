"""The compiled, immutable form of a saga: what the interpreter and the runtime read.

A ``Definition`` is built from a ``Saga`` class (see :mod:`statesaga.dsl`) and
validated once, when the class is created. It holds plain frozen records plus
lookup tables compiled for the interpreter's hot path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from statesaga.parallel import ParallelDef
from statesaga.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY, Retry

__all__ = [
    "ChildDef",
    "Definition",
    "MigrationDef",
    "StateDef",
    "StepDef",
    "TransitionDef",
    "children_of",
]

StepFunction = Callable[..., Any]


@attrs.frozen
class StateDef:
    """A state of the graph.

    ``timeout`` (seconds) applies to waiting states: when no event arrives in
    time the state's ``on_timeout`` transition is taken, or, if it has none,
    the saga compensates. ``timeout_of`` computes a run's own timeout instead:
    ``timeout_of(ctx)`` is called when a run enters the state, and what it
    returns (seconds, a ``timedelta``, or ``None`` for no timeout) is persisted
    as that wait's timeout.
    """

    name: str
    initial: bool = False
    final: bool = False
    timeout: float | None = None
    timeout_of: StepFunction | None = None

    @property
    def timed(self) -> bool:
        """The state's wait has a timeout, fixed or computed per run."""
        return self.timeout is not None or self.timeout_of is not None

    @property
    def timeout_name(self) -> str | None:
        """The name of the function that computes the timeout (``None``: fixed or none)."""
        return None if self.timeout_of is None else _qualname(self.timeout_of)


@attrs.frozen
class StepDef:
    """The work a transition does, with how it is undone and retried."""

    function: StepFunction
    compensation: StepFunction | None = None
    pivot: bool = False
    read_only: bool = False
    retry: Retry = DEFAULT_STEP_RETRY
    compensation_retry: Retry = DEFAULT_COMPENSATION_RETRY
    timeout: float | None = None
    transactional: bool = False
    compensate_on_failure: bool = False
    #: a pivot's void: run, like a compensation, only when the pivot fails for good
    #: (its outcome unknown, or it failed after possibly taking effect), never after it
    #: succeeded
    void: StepFunction | None = None
    #: whether the saga declared ``retry=``; an engine's ``default_retry`` replaces the
    #: default policy of steps that did not
    retry_declared: bool = False
    #: a child step: the saga it starts and waits for (``function`` then makes its input)
    child: ChildDef | None = None

    @property
    def function_name(self) -> str:
        return _qualname(self.function)

    @property
    def compensation_name(self) -> str | None:
        return None if self.compensation is None else _qualname(self.compensation)

    @property
    def void_name(self) -> str | None:
        return None if self.void is None else _qualname(self.void)

    @property
    def rollback(self) -> StepFunction | None:
        """What runs when the run compensates this step: its compensation, or a pivot's void."""
        return self.compensation if self.compensation is not None else self.void

    @property
    def rollback_name(self) -> str | None:
        return None if self.rollback is None else _qualname(self.rollback)


@attrs.frozen
class TransitionDef:
    """An edge: automatic (runs when its source is reached, if its guard allows),
    triggered by an event, or taken when a waiting state times out."""

    name: str
    source: str
    target: str
    step: StepDef | None = None
    guard: StepFunction | None = None
    guard_negated: bool = False
    event: str | None = None
    payload_type: type | None = None
    on_timeout: bool = False
    #: the branches the transition runs concurrently before it is taken (a fork/join)
    parallel: ParallelDef | None = None

    @property
    def automatic(self) -> bool:
        return self.event is None and not self.on_timeout

    @property
    def compensatable(self) -> bool:
        return self.step is not None and self.step.compensation is not None

    @property
    def guard_name(self) -> str | None:
        if self.guard is None:
            return None
        return ("not " if self.guard_negated else "") + _qualname(self.guard)


@attrs.frozen(eq=False)
class Definition:
    """A validated saga: its states, transitions and types.

    Use ``SagaClass.definition`` to get one; the runtime registers and runs these.
    """

    name: str
    version: int
    input_type: type
    context_type: type
    states: Mapping[str, StateDef]
    transitions: Mapping[str, TransitionDef]
    initial: str
    deadline: float | None = None
    output: Callable[..., Any] | None = None
    output_type: Any = None
    initial_context: Callable[[Any], Any] | None = None
    #: ``deadline(input)``: the run deadline computed from the input when a run starts
    #: (``None`` when the saga's deadline is fixed, in ``deadline``, or absent)
    deadline_of: Callable[[Any], Any] | None = None
    saga_class: type | None = None
    # lookup tables for the interpreter, derived from the graph
    automatic_from: Mapping[str, tuple[TransitionDef, ...]] = attrs.field(factory=dict)
    events_from: Mapping[str, Mapping[str, TransitionDef]] = attrs.field(factory=dict)
    timeout_from: Mapping[str, TransitionDef] = attrs.field(factory=dict)
    #: state -> event -> the transitions the event may take there, in the order their
    #: guards are tried (guarded ones in declaration order, then the unguarded fallback)
    event_choices: Mapping[str, Mapping[str, tuple[TransitionDef, ...]]] = attrs.field(factory=dict)
    #: a short hash of the graph's shape: states, edges, steps, markers. The
    #: runtime records it with each instance and refuses to drive an instance
    #: with a graph whose hash differs.
    graph_hash: str = ""
    #: an event sent before the run waits for it is refused (recorded as not
    #: accepted) instead of kept in the inbox until a state takes it
    refuse_early_events: bool = False
    #: the declared migrations of runs of older versions onto this one, by their version
    #: (``migrates_from``); not part of the graph's hash
    migrations: Mapping[int, MigrationDef] = attrs.field(factory=dict)
    #: the steps of parallel transitions' branches by name (``"book.flight"``)
    branch_steps: Mapping[str, TransitionDef] = attrs.field(factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """``(name, version)``, how the registry finds this definition."""
        return (self.name, self.version)

    def shape_hash(self) -> str:
        """Hash the graph's shape (what ``graph_hash`` holds once compiled)."""
        shape = {
            # states in any order are the same graph; transitions keep their order, which
            # decides which guard is tried first
            "states": sorted(_state_shape(s) for s in self.states.values()),
            "transitions": [
                [
                    t.name,
                    t.source,
                    t.target,
                    t.event,
                    t.on_timeout,
                    t.guard_name,
                    None
                    if t.step is None
                    else [
                        t.step.function_name,
                        t.step.compensation_name,
                        t.step.pivot,
                        t.step.read_only,
                        t.step.transactional,
                        t.step.compensate_on_failure,
                        t.step.timeout,
                        # (a field added later joins only when set: older hashes stay)
                        *([t.step.void_name] if t.step.void is not None else []),
                        *([t.step.child.shape] if t.step.child is not None else []),
                    ],
                    *([t.parallel.shape()] if t.parallel is not None else []),
                ]
                for t in self.transitions.values()
            ],
        }
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def with_transitions(self, transitions: Mapping[str, TransitionDef]) -> Definition:
        """This definition with ``transitions`` replaced (same names), its tables rebuilt.

        For wrappers that change how steps run (an engine's default retry policy,
        the testing kit's faults) but not the graph.
        """
        return attrs.evolve(
            self, transitions=transitions, **lookup_tables(self.states, transitions)
        )

    def step_of(self, name: str) -> TransitionDef:
        """The transition, or parallel branch step, called ``name``."""
        found = self.transitions.get(name)
        return found if found is not None else self.branch_steps[name]

    def map_steps(self, change: Callable[[TransitionDef], TransitionDef]) -> Definition:
        """This definition with ``change`` applied to every step-carrying transition.

        Branch steps included; for wrappers that change how steps run, not the graph.
        """
        transitions = {
            name: (
                attrs.evolve(t, parallel=t.parallel.map_steps(change))
                if t.parallel is not None
                else change(t)
                if t.step is not None
                else t
            )
            for name, t in self.transitions.items()
        }
        return self.with_transitions(transitions)

    def events_in(self, state: str) -> tuple[str, ...]:
        """The events the given state accepts."""
        return tuple(self.events_from.get(state, {}))

    def make_initial_context(self, saga_input: Any) -> Any:
        """The context data an instance starts with."""
        if self.initial_context is not None:
            return self.initial_context(saga_input)
        return self.context_type()


@attrs.frozen(eq=False)
class ChildDef:
    """What a child step starts: another saga, fed from the parent, read back into it.

    ``definition`` is the child saga's; the step's function (``StepDef.function``)
    makes the child's input from the parent's context; ``output``, when given, is
    ``output(ctx, child_output)`` and returns the parent's new context (or ``None``).
    """

    definition: Definition
    output: StepFunction | None = None

    @property
    def shape(self) -> list[Any]:
        """What the parent's graph hash records of the child: its name, version and reader."""
        return [
            self.definition.name,
            self.definition.version,
            None if self.output is None else _qualname(self.output),
        ]


def children_of(definition: Definition) -> list[Definition]:
    """The child sagas a definition's steps start (each once, in declaration order)."""
    found: dict[tuple[str, int], Definition] = {}
    for t in definition.transitions.values():
        if t.step is not None and t.step.child is not None:
            found.setdefault(t.step.child.definition.key, t.step.child.definition)
    return list(found.values())


@attrs.frozen(eq=False)
class MigrationDef:
    """A checked ``Migration``: where runs of an older version land on this one.

    ``states`` maps every open state of the older graph to a state of this one;
    ``transitions`` maps the older graph's transitions to the names they have here
    (those this version still has); ``context`` turns the old context into the
    new one (``None``: the stored context is structured into the new type as is).
    """

    source: Definition
    states: Mapping[str, str]
    transitions: Mapping[str, str]
    context: Callable[[Any], Any] | None = None

    @property
    def from_version(self) -> int:
        """The older version whose runs this migration moves."""
        return self.source.version

    @property
    def context_name(self) -> str | None:
        """The context function's name, as the ``migrated`` history record shows it."""
        return None if self.context is None else _qualname(self.context)


def lookup_tables(
    states: Mapping[str, StateDef], transitions: Mapping[str, TransitionDef]
) -> dict[str, Any]:
    """The interpreter's lookup tables of a graph, as ``Definition`` keyword arguments."""
    automatic: dict[str, tuple[TransitionDef, ...]] = {}
    events: dict[str, dict[str, TransitionDef]] = {state: {} for state in states}
    choices: dict[str, dict[str, tuple[TransitionDef, ...]]] = {state: {} for state in states}
    for state in states:
        out = [t for t in transitions.values() if t.source == state and t.automatic]
        # guarded edges are tried in declaration order; the unguarded one is the fallback
        automatic[state] = _guarded_first(out)
    for t in transitions.values():
        if t.event is not None:
            events[t.source].setdefault(t.event, t)
            choices[t.source][t.event] = (*choices[t.source].get(t.event, ()), t)
    for by_event in choices.values():
        for event, takers in by_event.items():
            by_event[event] = _guarded_first(list(takers))
    return {
        "automatic_from": automatic,
        "events_from": events,
        "event_choices": choices,
        "timeout_from": {t.source: t for t in transitions.values() if t.on_timeout},
        "branch_steps": {
            step.name: step
            for t in transitions.values()
            if t.parallel is not None
            for step in t.parallel.steps
        },
    }


def _guarded_first(transitions: list[TransitionDef]) -> tuple[TransitionDef, ...]:
    return tuple(
        [t for t in transitions if t.guard is not None]
        + [t for t in transitions if t.guard is None]
    )


def _state_shape(state: StateDef) -> tuple[Any, ...]:
    shape: tuple[Any, ...] = (state.name, state.initial, state.final, state.timeout)
    # (a field added later joins only when set: the hashes of older graphs stay)
    return shape if state.timeout_of is None else (*shape, state.timeout_name)


def _qualname(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
