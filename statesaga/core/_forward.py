"""The forward path: arriving in states, taking steps, branches, events and wait timeouts.

:meth:`Forward.settle` is the interpreter's loop: it applies the rules that
need no outcome (the deadline, a wait's timeout, step-less edges) until a
decision is due. It is the hot path: snapshots are built by one constructor
call, not ``attrs.evolve``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import attrs

from statesaga.core._parallel import Parallel
from statesaga.core._rules import Rules
from statesaga.core._types import (
    ChooseBranch,
    Decision,
    Done,
    ErrorInfo,
    ErrorKind,
    EventJudged,
    Finish,
    HistoryKind,
    JudgeEvent,
    MeasureTimeout,
    Next,
    Record,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    Status,
    TimeoutMeasured,
    Wait,
    idempotency_key,
)
from statesaga.definition import TransitionDef
from statesaga.errors import EventNotAllowed, InvalidOperation

__all__ = ["Forward"]

_MAX_CHAINED = 1000


class Forward:
    """The forward rules of one definition (see :class:`~statesaga.core.Interpreter`)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.definition = rules.definition
        self._transitions = rules.transitions
        self._automatic = rules.automatic
        self._events = rules.events
        self._choices = rules.choices
        self._states = rules.states
        self.parallel = Parallel(rules, self)

    def pending(self, snapshot: Snapshot, status: Status) -> TransitionDef:
        """The transition whose step the outcome reports on (it must be pending)."""
        if snapshot.status is not status or snapshot.pending is None:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} has no pending step to report on "
                f"(status {snapshot.status}, state {snapshot.state!r})",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        return self._transitions[snapshot.pending]

    def step_succeeded(self, snapshot: Snapshot, data: Any, now: float) -> Next:
        """The pending step returned ``data``: take its transition."""
        t = self.pending(snapshot, Status.RUNNING)
        kind = HistoryKind.EVENT if t.event is not None else HistoryKind.FORWARD
        snapshot, record = self.advance(snapshot, t, data, now, kind)
        return self.settle(snapshot, now, [record])

    def enter(self, snapshot: Snapshot, state: str, now: float) -> Snapshot:
        """The snapshot on arriving in ``state``: its status and what is pending there."""
        return self.arrive(
            snapshot,
            state,
            now,
            snapshot.data,
            snapshot.stack,
            snapshot.pivoted,
            snapshot.seq,
            snapshot.error,
        )

    def arrive(
        self,
        s: Snapshot,
        state: str,
        now: float,
        data: Any,
        stack: tuple[Done, ...],
        pivoted: bool,
        seq: int,
        error: ErrorInfo | None,
    ) -> Snapshot:
        # one constructor call: this is the interpreter's hot path, and attrs.evolve
        # costs twice as much as building the snapshot directly
        spec = self._states[state]
        if spec.final:
            return Snapshot(
                s.instance_id,
                state,
                Status.COMPLETED,
                data,
                None,
                0,
                None,
                s.deadline,
                stack,  # kept: a completed child is compensated when its parent is
                pivoted,
                seq,
                error,
                None,
            )
        automatic = self._automatic[state]
        if not automatic:
            wake_at = None if spec.timeout is None else now + spec.timeout
            return Snapshot(
                s.instance_id,
                state,
                Status.WAITING,
                data,
                None,
                0,
                wake_at,
                s.deadline,
                stack,
                pivoted,
                seq,
                error,
                None,
                measure_timeout=spec.timeout_of is not None,
            )
        pending = automatic[0].name if len(automatic) == 1 and automatic[0].guard is None else None
        return Snapshot(
            s.instance_id,
            state,
            Status.RUNNING,
            data,
            pending,
            1 if pending else 0,
            None,
            s.deadline,
            stack,
            pivoted,
            seq,
            error,
            None,
        )

    def advance(
        self, snapshot: Snapshot, t: TransitionDef, data: Any, now: float, kind: HistoryKind
    ) -> tuple[Snapshot, Record]:
        stack = snapshot.stack
        pivoted = snapshot.pivoted
        step = t.step
        if step is not None:
            if step.pivot:
                stack, pivoted = (), True
            elif step.compensation is not None:
                stack = (*stack, Done(t.name, snapshot.seq))
        record = Record(kind, t.source, t.target, t.name, snapshot.attempt, None, t.event)
        moved = self.arrive(snapshot, t.target, now, data, stack, pivoted, snapshot.seq + 1, None)
        return moved, record

    def settle(self, snapshot: Snapshot, now: float, records: list[Record]) -> Next:
        """Apply the rules that need no outcome (deadline, timeouts, step-less edges); decide."""
        deadline_passed = self.rules.deadline_passed
        for _ in range(_MAX_CHAINED):
            status = snapshot.status
            forking = snapshot.forking
            if (
                (status is Status.RUNNING or status is Status.WAITING)
                # (a cheap test first: most runs have no deadline)
                and snapshot.deadline is not None
                and (forking is None or forking.error is None)
                and deadline_passed(snapshot, now)
            ):
                error = ErrorInfo(
                    "DeadlinePassed", "the run deadline passed", False, kind=ErrorKind.DEADLINE
                )
                snapshot = self.rules.stop(snapshot, error, HistoryKind.DEADLINE, records)
                continue
            if status is Status.WAITING:
                if snapshot.measure_timeout:
                    return Next(snapshot, MeasureTimeout(snapshot.state), tuple(records))
                if snapshot.wake_at is not None and now >= snapshot.wake_at:
                    snapshot = self.wait_timed_out(snapshot, now, records)
                    continue
                return Next(
                    snapshot,
                    Wait(self.definition.events_in(snapshot.state), self.rules.earliest(snapshot)),
                    tuple(records),
                )
            if status is Status.RUNNING:
                if forking is not None:
                    snapshot, forked = self.parallel.settle(snapshot, now, records)
                    if forked is not None:
                        return Next(snapshot, forked, tuple(records))
                    continue
                if snapshot.wake_at is not None and now < snapshot.wake_at:
                    return Next(snapshot, Sleep(snapshot.wake_at), tuple(records))
                if snapshot.pending is None:
                    names = tuple(t.name for t in self._automatic[snapshot.state])
                    return Next(snapshot, ChooseBranch(names), tuple(records))
                t = self._transitions[snapshot.pending]
                if t.parallel is not None:
                    snapshot = self.parallel.begin(snapshot, t)
                    continue
                if t.step is None:
                    snapshot, record = self.advance(
                        snapshot, t, snapshot.data, now, HistoryKind.FORWARD
                    )
                    records.append(record)
                    continue
                key = idempotency_key(snapshot.instance_id, snapshot.seq, t.name)
                decision: Decision = RunStep(
                    t.name,
                    snapshot.attempt,
                    key,
                    t.step.timeout,
                    completes=self.definition.states[t.target].final,
                )
                return Next(snapshot, decision, tuple(records))
            if status is Status.COMPENSATING:
                if not snapshot.stack:
                    snapshot = attrs.evolve(snapshot, status=Status.COMPENSATED, attempt=0)
                    continue
                if snapshot.wake_at is not None and now < snapshot.wake_at:
                    return Next(snapshot, Sleep(snapshot.wake_at), tuple(records))
                done = snapshot.stack[-1]
                t = self._transitions[done.transition]
                assert t.step is not None
                key = idempotency_key(snapshot.instance_id, done.seq, t.name, "undo")
                return Next(
                    snapshot,
                    RunCompensation(t.name, snapshot.attempt, key, t.step.timeout),
                    tuple(records),
                )
            return Next(snapshot, Finish(status), tuple(records))
        raise InvalidOperation(
            f"saga {self.definition.name!r} took {_MAX_CHAINED} transitions without running a "
            f"step (a cycle of step-less automatic transitions around {snapshot.state!r}?)",
            saga=self.definition.name,
            instance_id=snapshot.instance_id,
            state=snapshot.state,
        )

    def branch_chosen(self, snapshot: Snapshot, name: str | None, now: float) -> Next:
        """The driver's guards chose ``name`` (``None``: none passed, so wait or fail)."""
        if snapshot.status is not Status.RUNNING or snapshot.pending is not None:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not choosing a branch",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        if name is not None:
            if name not in {t.name for t in self._automatic[snapshot.state]}:
                raise InvalidOperation(
                    f"transition {name!r} does not leave state {snapshot.state!r}",
                    instance_id=snapshot.instance_id,
                    state=snapshot.state,
                )
            return self.settle(attrs.evolve(snapshot, pending=name, attempt=1), now, [])
        state = self._states[snapshot.state]
        if self._events[snapshot.state]:
            wake_at = None if state.timeout is None else now + state.timeout
            waiting = attrs.evolve(
                snapshot,
                status=Status.WAITING,
                wake_at=wake_at,
                measure_timeout=state.timeout_of is not None,
            )
            record = Record(HistoryKind.WAIT, snapshot.state, snapshot.state)
            return self.settle(waiting, now, [record])
        error = ErrorInfo(
            "NoTransitionAllowed",
            f"no guard out of state {snapshot.state!r} passed and it waits for no event",
            retryable=False,
            kind=ErrorKind.NO_TRANSITION,
        )
        records: list[Record] = []
        return self.settle(
            self.rules.stop(snapshot, error, HistoryKind.FAILURE, records), now, records
        )

    def event(
        self,
        snapshot: Snapshot,
        event: str,
        payload: Any,
        now: float,
        received_at: float | None,
        judged: EventJudged | None = None,
    ) -> Next:
        """An event arrived (received at ``received_at``); it must fit the waiting state.

        An event some guarded transition may take is judged first: the answer is a
        :class:`JudgeEvent` decision, and the driver reports the guards' verdict as
        ``judged`` (see :meth:`Rules.guard_fit`).
        """
        waiting = snapshot.status is Status.WAITING and not snapshot.measure_timeout
        choices = self._choices[snapshot.state].get(event) if waiting else None
        if not choices:
            accepted = self.definition.events_in(snapshot.state)
            if snapshot.status is not Status.WAITING:
                hint = f"it is {snapshot.status}, not waiting for events"
            elif snapshot.measure_timeout:
                hint = "its wait's timeout is still to be measured"
            elif accepted:
                hint = f"it accepts {', '.join(accepted)}"
            else:
                hint = "it accepts no events"
            raise EventNotAllowed(
                f"instance {snapshot.instance_id} in state {snapshot.state!r} cannot take event "
                f"{event!r}: {hint}",
                event=event,
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        # an event is judged by when it was received: one that came before the wait timed
        # out is taken even if nothing consumed it until after (the inbox kept it)
        at = now if received_at is None else min(received_at, now)
        if self.rules.overdue(snapshot, at):
            # the deadline or the wait's timeout passed before the event came: time wins
            return self.settle(snapshot, now, [])
        if judged is None:
            guarded = tuple(t.name for t in choices if t.guard is not None)
            if guarded:
                return Next(snapshot, JudgeEvent(event, guarded, payload, received_at))
            t = choices[0]
        else:
            if not self.rules.guard_fit(snapshot, judged).accepted:
                raise InvalidOperation(
                    f"the guards of {event!r} refused it in state {snapshot.state!r}; "
                    "record it as rejected (Rules.guard_fit) instead of applying it",
                    instance_id=snapshot.instance_id,
                    state=snapshot.state,
                )
            names = {c.name: c for c in choices}
            t = names[judged.transition] if judged.transition in names else choices[-1]
        if t.step is None:
            moved, record = self.advance(snapshot, t, snapshot.data, now, HistoryKind.EVENT)
            return self.settle(moved, at, [record])
        running = attrs.evolve(
            snapshot, status=Status.RUNNING, pending=t.name, attempt=1, wake_at=None, event=payload
        )
        return self.settle(running, at, [])

    def timeout_measured(self, snapshot: Snapshot, measured: TimeoutMeasured, now: float) -> Next:
        """The waiting state's timeout function answered: wait until then, or stop."""
        if snapshot.status is not Status.WAITING or not snapshot.measure_timeout:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not measuring a timeout",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        state = snapshot.state
        error = measured.error
        seconds: float | None = None
        if error is None:
            seconds, problem = _duration(measured.value)
            if problem is not None:
                kind, why = problem
                error = ErrorInfo(
                    kind,
                    f"the timeout of state {state!r} {why}; return seconds (>= 0), a "
                    "timedelta, or None for no timeout",
                    retryable=False,
                )
        records: list[Record] = []
        if error is not None:
            error = attrs.evolve(error, retryable=False, step=f"{state}.timeout")
            records.append(Record(HistoryKind.FAILURE, state, state, None, 0, error))
            unmeasured = attrs.evolve(snapshot, measure_timeout=False)
            stopped = self.rules.stop(unmeasured, error, None, records)
            return self.settle(stopped, now, records)
        wake_at = None if seconds is None else now + seconds
        waiting = attrs.evolve(snapshot, measure_timeout=False, wake_at=wake_at)
        return self.settle(waiting, now, [Record(HistoryKind.WAIT, state, state)])

    def wait_timed_out(self, snapshot: Snapshot, now: float, records: list[Record]) -> Snapshot:
        """The wait's timeout passed: take the timeout transition, or stop."""
        t = self.definition.timeout_from.get(snapshot.state)
        if t is None:
            error = ErrorInfo(
                "WaitTimedOut",
                f"no event arrived in state {snapshot.state!r} in time",
                False,
                kind=ErrorKind.WAIT_TIMEOUT,
            )
            return self.rules.stop(snapshot, error, HistoryKind.TIMEOUT, records)
        if t.step is None:
            moved, record = self.advance(snapshot, t, snapshot.data, now, HistoryKind.TIMEOUT)
            records.append(record)
            return moved
        return attrs.evolve(
            snapshot, status=Status.RUNNING, pending=t.name, attempt=1, wake_at=None
        )


def _duration(value: Any) -> tuple[float | None, tuple[str, str] | None]:
    """Seconds from what a timeout function returned, or (error type, why it is not one)."""
    if value is None:
        return None, None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return None, ("TypeError", f"returned a {type(value).__name__} ({value!r})")
    if not math.isfinite(seconds) or seconds < 0:
        return None, ("ValueError", f"returned {value!r}, not a finite duration >= 0")
    return seconds, None
