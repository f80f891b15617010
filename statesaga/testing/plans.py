"""Fault plans: what goes wrong while a saga runs, and strategies that generate them.

A :class:`FaultPlan` names, for one run of a definition, which steps and
compensations fail (how often, and how), where the process crashes, where a
paused holder loses its lease, when events arrive, and whether a duplicate
start races the run. :func:`fault_plans` draws plans that fit a definition.
"""

from __future__ import annotations

from typing import Literal

import attrs
from hypothesis import strategies as st

from statesaga.definition import Definition
from statesaga.testing._family import family, step_names

__all__ = [
    "DELIVERY_MODES",
    "DeliveryMode",
    "EventPlan",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "fault_plans",
]

FaultKind = Literal[
    "retryable",
    "fatal",
    "timeout",
    "crash_before",
    "crash_after",
    "crash_after_commit",
    "lease_loss",
    "duplicate_start",
    "effect_then_raise",
    "connection_lost",
]
DeliveryMode = Literal[
    "on_time", "early", "late", "twice", "never", "while_locked", "burst", "refused"
]

STEP_FAULTS: tuple[FaultKind, ...] = (
    "retryable",
    "fatal",
    "timeout",
    "crash_before",
    "crash_after",
    "crash_after_commit",
    "lease_loss",
    "duplicate_start",
    "effect_then_raise",
    "connection_lost",
)
UNDO_FAULTS: tuple[FaultKind, ...] = (
    "retryable",
    "fatal",
    "crash_before",
    "crash_after",
    "crash_after_commit",
    "connection_lost",
)
DELIVERY_MODES: tuple[DeliveryMode, ...] = (
    "on_time",
    "early",
    "late",
    "twice",
    "never",
    "while_locked",
    "burst",
)


@attrs.frozen
class Fault:
    """``kind`` hits ``target`` (a transition, or ``<transition>.undo``) the next ``times`` calls.

    Kinds: ``retryable`` / ``fatal`` / ``timeout`` errors; ``crash_before`` /
    ``crash_after`` the body (the process dies before anything is persisted);
    ``crash_after_commit`` (dies right after the transition commits);
    ``lease_loss`` (the holder pauses past its lease, another engine recovers
    the run meanwhile); ``duplicate_start`` (a second start of the same input
    races the run while this step runs); ``effect_then_raise`` (the call takes
    effect, then raises a retryable error: "it booked, then the attempt
    failed"); ``connection_lost`` (the database connection dies as the call's
    transition is written: nothing is written, the engine's call fails).
    """

    target: str
    kind: FaultKind
    times: int = 1

    def __str__(self) -> str:
        return f"{self.target}: {self.kind}" + (f" x{self.times}" if self.times > 1 else "")


@attrs.frozen
class EventPlan:
    """How ``event`` is delivered: ``on_time``, ``early`` (while a step runs, once),
    ``late`` (after the wait's timeout), ``twice``, ``never``, ``while_locked`` (once,
    while someone else holds the run's entity lock; nobody sends it again) or
    ``burst`` (four deliveries at once from four engines, two with one event id) or, for
    an event some transition guards, ``refused`` (delivered first with an answer its
    guards refuse, a wrong confirmation: the run must keep waiting on its original
    timeout; then delivered on time)."""

    event: str
    mode: DeliveryMode

    def __str__(self) -> str:
        return f"{self.event}: {self.mode}"


@attrs.frozen
class FaultPlan:
    """Everything that goes wrong in one run.

    Attributes:
        faults: the injected faults, applied in order of their targets' calls.
        events: how each event is delivered (events not named arrive on time).
        deadline: the run's deadline in (fake) seconds, if any.
        lock_held: how many times someone else holds the run's entity lock just
            when recovery, a timeout or the deadline fires for it.
    """

    faults: tuple[Fault, ...] = ()
    events: tuple[EventPlan, ...] = ()
    deadline: float | None = None
    lock_held: int = 0

    def __str__(self) -> str:
        parts = [str(f) for f in self.faults] + [str(e) for e in self.events]
        if self.deadline is not None:
            parts.append(f"deadline {self.deadline:g}s")
        if self.lock_held:
            parts.append(f"lock held at recovery x{self.lock_held}")
        return "; ".join(parts) or "no faults"

    def mode_of(self, event: str) -> DeliveryMode:
        """How ``event`` is delivered (``on_time`` unless the plan says otherwise)."""
        for planned in self.events:
            if planned.event == event:
                return planned.mode
        return "on_time"


def fault_plans(
    definition: Definition,
    *,
    max_faults: int = 3,
    max_times: int = 3,
    kinds: tuple[FaultKind, ...] = STEP_FAULTS,
    undo_kinds: tuple[FaultKind, ...] = UNDO_FAULTS,
    deadlines: bool | None = None,
) -> st.SearchStrategy[FaultPlan]:
    """Fault plans for ``definition``: faults on its steps and compensations, event
    deliveries for its events, and maybe a run deadline. Shrinks towards no faults.

    ``deadlines``: whether plans set run deadlines (default: when the saga
    declares a ``deadline``, as its own deadline or a tight one).

    >>> import attrs
    >>> from statesaga import Saga, State
    >>> @attrs.define
    ... class Nothing:
    ...     pass
    >>> class One(Saga[Nothing, Nothing]):
    ...     name = "one"
    ...     new = State(initial=True)
    ...     done = State(final=True)
    ...     go = new.to(done).run(lambda ctx: None, read_only=True)
    >>> plans = fault_plans(One.definition)
    >>> print(FaultPlan((Fault("go", "crash_after"),), deadline=30))
    go: crash_after; deadline 30s
    """
    # the steps of the sagas its child steps start too, as ``<child saga>/<transition>``
    members = [
        (step_names(definition, member, name), t)
        for member in family(definition).values()
        # (a parallel transition's branch steps too: a failure in each branch)
        for name, t in {**member.transitions, **member.branch_steps}.items()
    ]
    steps = sorted(name for name, t in members if t.step is not None)
    undos = sorted(
        f"{name}.undo"
        for name, t in members
        # a compensation, or a void (a child step's undo is the runtime's)
        if t.step is not None and t.step.rollback is not None and t.step.child is None
    )
    events = sorted({t.event for _, t in members if t.event is not None})
    guarded = {t.event for _, t in members if t.event and t.guard}
    choices: list[st.SearchStrategy[Fault]] = []
    if steps and kinds:
        choices.append(
            st.builds(
                Fault, st.sampled_from(steps), st.sampled_from(kinds), st.integers(1, max_times)
            )
        )
    if undos and undo_kinds:
        choices.append(
            st.builds(
                Fault,
                st.sampled_from(undos),
                st.sampled_from(undo_kinds),
                st.integers(1, max_times),
            )
        )
    faults: st.SearchStrategy[tuple[Fault, ...]] = (
        st.lists(st.one_of(choices), max_size=max_faults).map(tuple) if choices else st.just(())
    )

    def modes(event: str) -> tuple[DeliveryMode, ...]:
        return (*DELIVERY_MODES, "refused") if event in guarded else DELIVERY_MODES

    deliveries = st.tuples(
        *(st.builds(EventPlan, st.just(event), st.sampled_from(modes(event))) for event in events)
    )
    if deadlines is None:
        deadlines = definition.deadline is not None
    choices_of_deadline = sorted(
        {1.0, 30.0, *([definition.deadline] if definition.deadline else [])}
    )
    deadline = st.none() | st.sampled_from(choices_of_deadline) if deadlines else st.none()
    return st.builds(FaultPlan, faults, deliveries, deadline, st.integers(0, 2))
