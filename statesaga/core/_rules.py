"""The rules every path of the interpreter asks about, each decided here once.

When a pivot binds the run (it only goes forward), when the deadline
applies, when a run is next due, whether an event or a cancel fits, and
what a failure does to a run: compensate, or (bound) stop ``failed``. The
forward path, the compensation path and the drivers all ask these; none
re-derives them.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class Data:
...     pass
>>> class Paid(Saga[Data, Data]):
...     name = "paid"
...     new = State(initial=True)
...     done = State(final=True)
...     pay = new.to(done).on("paid")
>>> rules = Rules(Paid.definition)
>>> waiting = Snapshot("i-1", "new", Status.WAITING, deadline=10.0)
>>> rules.deadline_passed(waiting, 10.0), rules.event_fit(waiting, "paid", 5.0).verdict
(True, 'accept')
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from statesaga.core._children import child_fit, child_transition, waits_for_child
from statesaga.core._types import (
    ACCEPT,
    EARLY,
    LATE,
    Done,
    ErrorInfo,
    EventFit,
    EventJudged,
    HistoryKind,
    Record,
    Snapshot,
    Status,
)
from statesaga.definition import Definition

__all__ = ["Rules"]


class Rules:
    """One definition's tables and the rules about pivots, deadlines, events and failures.

    Args:
        definition: the saga's compiled definition.
        rand: a source of uniform floats in [0, 1) for retry jitter.
    """

    def __init__(
        self, definition: Definition, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.definition = definition
        self.rand = rand
        # (branch steps too: a compensation stack holds them beside transitions)
        self.transitions = {**definition.transitions, **definition.branch_steps}
        self.automatic = definition.automatic_from
        self.events = definition.events_from
        self.choices = definition.event_choices
        self.states = definition.states
        self.later_events = _events_reachable(definition)

    # -- pivots and the deadline ----------------------------------------------------------

    def pivot_pending(self, snapshot: Snapshot) -> bool:
        """A pivot step is the next thing to run (or to retry)."""
        if snapshot.status is not Status.RUNNING or snapshot.pending is None:
            return False
        step = self.transitions[snapshot.pending].step
        return step is not None and step.pivot

    def bound(self, snapshot: Snapshot) -> bool:
        """The run only goes forward: its pivot took effect, or may have.

        A pivot may have taken effect once a try of it failed with an unknown
        outcome (a retryable error: a timeout, a lost answer) or it was pending
        when the run was resumed after a crash. Neither the deadline nor a cancel
        then compensates the steps before it.
        """
        if snapshot.pivoted:
            return True
        return self.pivot_pending(snapshot) and (snapshot.attempt > 1 or snapshot.pivot_unknown)

    def deadline_passed(self, snapshot: Snapshot, at: float) -> bool:
        """The run's deadline had passed at ``at`` and still applies (the run is not bound).

        The one deadline rule: :meth:`earliest` wakes a waiting run for it on the same terms.
        """
        deadline = snapshot.deadline
        return deadline is not None and at >= deadline and not self.bound(snapshot)

    def overdue(self, snapshot: Snapshot, at: float) -> bool:
        """The deadline or the wait's timeout had passed at ``at``: time wins over an event."""
        if self.deadline_passed(snapshot, at):
            return True
        return snapshot.wake_at is not None and at >= snapshot.wake_at

    # -- failures ---------------------------------------------------------------------------

    def stop(
        self,
        snapshot: Snapshot,
        error: ErrorInfo,
        kind: HistoryKind | None,
        records: list[Record],
        *,
        step_failed: bool = False,
    ) -> Snapshot:
        """Start compensating or, bound, fail; recording ``kind`` if given.

        Past the pivot (or with a pivot that may have taken effect) nothing is
        undone: the run stops ``failed``, its step kept pending for a retry. A
        pivot that declares a void and failed for good (``step_failed``: its
        retries spent, or an error it may have taken effect before) is voided
        instead, and then the steps before it are compensated: its void is the
        first thing undone. A pivot that succeeded is never voided.
        """
        if snapshot.forking is not None:
            stopped = self._stop_fork(snapshot, error, kind, records)
            if stopped is not None:
                return stopped
            snapshot = attrs.evolve(snapshot, forking=None)
        elif kind is not None:
            records.append(Record(kind, snapshot.state, snapshot.state, snapshot.pending, 0, error))
        t = self.transitions[snapshot.pending] if snapshot.pending is not None else None
        voided = (
            step_failed
            and not snapshot.pivoted
            and snapshot.status is Status.RUNNING
            and t is not None
            and t.step is not None
            and t.step.void is not None
        )
        if self.bound(snapshot) and not voided:
            return attrs.evolve(
                snapshot,
                status=Status.FAILED,
                error=error,
                wake_at=None,
                pivot_unknown=not snapshot.pivoted,
            )
        stack = snapshot.stack
        if (
            voided
            or (
                snapshot.status is Status.RUNNING
                and t is not None
                and t.step is not None
                and t.step.compensate_on_failure
            )
            # a child the run waited for is cancelled (or compensated) by its step's undo
            or waits_for_child(snapshot, t)
        ):
            assert t is not None
            # the pending step's effect is unknown: a try may have failed part-way, or run
            # before a crash that nothing recorded (an interpreter cannot tell). Its
            # compensation tolerates an effect that never happened, so undo it too,
            # under its idempotency key. A pivot's void is pushed the same way
            stack = (*stack, Done(t.name, snapshot.seq))
        return attrs.evolve(
            snapshot,
            status=Status.COMPENSATING,
            pending=None,
            attempt=1,
            wake_at=None,
            error=error,
            event=None,
            stack=stack,
            pivot_unknown=False,
        )

    def _stop_fork(
        self, snapshot: Snapshot, error: ErrorInfo, kind: HistoryKind | None, records: list[Record]
    ) -> Snapshot | None:
        """How a run in a fork stops; ``None``: as any other run (it compensates; what the
        branches did is on its stack already)."""
        forking = snapshot.forking
        assert forking is not None
        if kind is not None:
            records.append(Record(kind, snapshot.state, snapshot.state, snapshot.pending, 0, error))
        if forking.in_flight:
            # no new branch step starts; the running ones report before anything is undone
            first = forking.error or error
            return attrs.evolve(snapshot, forking=attrs.evolve(forking, error=first), error=first)
        if self.bound(snapshot):
            # past the pivot nothing is undone: the run stops failed, keeping what its
            # branches did; a retry runs the branch steps that did not finish
            return attrs.evolve(
                snapshot,
                status=Status.FAILED,
                error=error,
                wake_at=None,
                forking=forking.for_retry(),
            )
        return None

    # -- what the drivers ask -------------------------------------------------------------

    def event_fit(self, snapshot: Snapshot, event: str, received_at: float) -> EventFit:
        """Whether an event received at ``received_at`` applies now, waits, or comes too late."""
        status = snapshot.status
        state = snapshot.state
        if child_transition(event) is not None:
            return child_fit(snapshot, event)
        if status.is_terminal:
            return EventFit(LATE, f"the run had ended ({status}) when {event!r} was consumed")
        if status is Status.COMPENSATING:
            return EventFit(LATE, f"the run is compensating; it takes no more events ({event!r})")
        if snapshot.measure_timeout and event in self.events[state]:
            return EventFit(EARLY)  # judged once the wait's own timeout is known
        if status is Status.WAITING and event in self.events[state]:
            if self.deadline_passed(snapshot, received_at):
                return EventFit(LATE, f"{event!r} arrived after the run's deadline")
            if snapshot.wake_at is not None and received_at >= snapshot.wake_at:
                return EventFit(
                    LATE, f"{event!r} arrived after the wait in state {state!r} timed out"
                )
            return EventFit(ACCEPT)
        if event in self.later_events[state]:
            if self.definition.refuse_early_events:
                return EventFit(
                    LATE,
                    f"{event!r} arrived before the run waited for it in state {state!r}, "
                    f"and saga {self.definition.name!r} refuses early events",
                )
            return EventFit(EARLY)
        return EventFit(
            LATE,
            f"state {state!r} does not take {event!r}, and no state the run can still reach does",
        )

    def guard_fit(self, snapshot: Snapshot, judged: EventJudged) -> EventFit:
        """Whether the guards' answer takes the event (``"accept"``) or refuses it (``"late"``).

        The first guarded transition whose guard passed is taken; if none did, the
        state's unguarded transition for the event (if any) is. A guard that raised
        refuses the event, with its error as the reason.
        """
        choices = self.choices[snapshot.state].get(judged.event, ())
        guarded = [t for t in choices if t.guard is not None]
        if judged.error is not None:
            failing = judged.transition or (guarded[0].name if guarded else "?")
            return EventFit(
                LATE,
                f"the guard of transition {failing!r} raised {judged.error.type}: "
                f"{judged.error.message}",
            )
        if judged.transition is not None or (choices and choices[-1].guard is None):
            return EventFit(ACCEPT)
        names = ", ".join(f"{t.name!r} [{t.guard_name}]" for t in guarded)
        return EventFit(
            LATE,
            f"{judged.event!r} was refused by the guard of {names} in state {snapshot.state!r}; "
            "the run keeps waiting",
        )

    def cancel_fit(self, snapshot: Snapshot, *, resumed: bool = False) -> EventFit:
        """Whether a cancel applies now (``"accept"``) or cannot any more (``"late"``)."""
        status = snapshot.status
        if status.is_terminal or status is Status.COMPENSATING:
            return EventFit(LATE, f"it is {status}")
        if snapshot.pivoted:
            return EventFit(LATE, "it has passed its pivot and only goes forward")
        if self.bound(snapshot) or (resumed and self.pivot_pending(snapshot)):
            return EventFit(LATE, "its pivot step may have taken effect, so it only goes forward")
        return EventFit(ACCEPT)

    def next_due(self, snapshot: Snapshot, now: float) -> float | None:
        """When a run released in ``snapshot`` next needs an engine (``None``: never by itself)."""
        status = snapshot.status
        if status.is_terminal:
            return None
        if status is Status.WAITING:
            # a wait whose own timeout is still to be measured needs an engine at once
            return now if snapshot.measure_timeout else self.earliest(snapshot)
        wake_at = snapshot.wake_at
        return wake_at if wake_at is not None and wake_at > now else now

    def earliest(self, snapshot: Snapshot) -> float | None:
        """When a waiting run is next due: its wait's timeout, or a deadline that applies."""
        deadline = None if self.bound(snapshot) else snapshot.deadline
        times = [t for t in (snapshot.wake_at, deadline) if t is not None]
        return min(times) if times else None


def due_when_let_go(
    status: Status, due_at: float | None, now: float, machine: Mapping[str, Any] | None = None
) -> float | None:
    """When a claimed run let go undriven (no snapshot decided) next needs an engine.

    The liveness rule without a definition at hand: it keeps its due time; a run
    that had none while it was being driven is due at once, for another engine,
    and so is a wait whose timeout is still to be measured (``machine``, the
    row's bookkeeping, says so); a wait without one waits for an event (its
    inbox finds it), an ended run never.

    >>> due_when_let_go(Status.RUNNING, None, 10.0), due_when_let_go(Status.WAITING, None, 10.0)
    (10.0, None)
    >>> due_when_let_go(Status.WAITING, None, 10.0, {"measure": True})
    10.0
    """
    if status.is_terminal:
        return None
    if due_at is None and status in (Status.RUNNING, Status.COMPENSATING):
        return now
    if due_at is None and status is Status.WAITING and machine and machine.get("measure"):
        return now
    return due_at


def _events_reachable(definition: Definition) -> dict[str, frozenset[str]]:
    """For each state: the events taken there or in any state reachable from it."""
    successors: dict[str, set[str]] = {state: set() for state in definition.states}
    for t in definition.transitions.values():
        successors.setdefault(t.source, set()).add(t.target)
    reachable: dict[str, frozenset[str]] = {}
    for state in definition.states:
        seen, todo = {state}, [state]
        while todo:
            for target in successors.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        reachable[state] = frozenset(
            event for s in seen for event in definition.events_from.get(s, {})
        )
    return reachable
