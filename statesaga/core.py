"""The interpreter: a pure, I/O-free state machine over a saga definition.

Given a :class:`~statesaga.definition.Definition`, an instance :class:`Snapshot`
and the outcome of the last action, :meth:`Interpreter.next` returns a
:class:`Next`: the new snapshot, the history records the driver must persist
with it (in one transaction), and the :data:`Decision` to carry out next.
All of statesaga's semantics live here; the engines only perform the I/O the
interpreter asks for. Nothing here imports SQL, Redis or asyncio, and time and
randomness come in as arguments.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class In:
...     n: int = 0
>>> @attrs.define
... class Data:
...     done: bool = False
>>> class Demo(Saga[In, Data]):
...     name = "demo"
...     new = State(initial=True)
...     done = State(final=True)
...     finish = new.to(done).run(lambda ctx: Data(done=True), read_only=True)
>>> core = Interpreter(Demo.definition)
>>> first = core.start("i-1", In(), Data(), now=0.0)
>>> first.decision
RunStep(transition='finish', attempt=1, idempotency_key='i-1:0:finish', timeout=None)
>>> last = core.next(first.snapshot, StepSucceeded(Data(done=True)), now=1.0)
>>> last.snapshot.status, last.snapshot.state, [r.kind for r in last.records]
(<Status.COMPLETED: 'completed'>, 'done', [<HistoryKind.FORWARD: 'forward'>])
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

import attrs

from statesaga.definition import Definition, TransitionDef
from statesaga.errors import CancelNotAllowed, EventNotAllowed, InvalidOperation, RetryNotAllowed

__all__ = [
    "BranchChosen",
    "CancelRequested",
    "ChooseBranch",
    "CompensationFailed",
    "CompensationSucceeded",
    "Decision",
    "Done",
    "ErrorInfo",
    "EventArrived",
    "EventFit",
    "Finish",
    "HistoryKind",
    "Interpreter",
    "Next",
    "Outcome",
    "Record",
    "RetryRequested",
    "RunCompensation",
    "RunStep",
    "Sleep",
    "Snapshot",
    "Status",
    "StepFailed",
    "StepSucceeded",
    "Wait",
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
]


class Status(enum.StrEnum):
    """Where an instance stands."""

    RUNNING = "running"
    """Steps are being run (or a retry is due)."""
    WAITING = "waiting"
    """Waiting for an event or a timeout."""
    COMPENSATING = "compensating"
    """Undoing completed steps, in reverse order."""
    COMPLETED = "completed"
    """Reached a final state."""
    COMPENSATED = "compensated"
    """Failed or was cancelled, and every completed step was compensated."""
    FAILED = "failed"
    """Needs attention: a compensation (or a step after the pivot) kept failing."""

    @property
    def is_terminal(self) -> bool:
        """Completed, compensated or failed: nothing runs until someone acts."""
        return self in _TERMINAL

    @property
    def is_open(self) -> bool:
        """Still holds its entity key: everything but completed and compensated."""
        return self not in _CLOSED


_TERMINAL = frozenset({Status.COMPLETED, Status.COMPENSATED, Status.FAILED})
_CLOSED = frozenset({Status.COMPLETED, Status.COMPENSATED})

#: statuses that keep an instance's entity key taken (everything but completed and compensated)
OPEN_STATUSES: tuple[str, ...] = tuple(s.value for s in Status if s not in _CLOSED)
#: statuses in which nothing runs until someone acts
TERMINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in Status if s in _TERMINAL)


class HistoryKind(enum.StrEnum):
    """What a history record describes."""

    START = "start"
    FORWARD = "forward"
    EVENT = "event"
    WAIT = "wait"
    TIMEOUT = "timeout"
    RETRY = "retry"
    FAILURE = "failure"
    DEADLINE = "deadline"
    CANCEL = "cancel"
    COMPENSATE = "compensate"
    COMPENSATION_RETRY = "compensation_retry"
    RESUME = "resume"
    REJECTED = "rejected"
    """An event or cancel from the inbox that the run could not take (the reason is its error)."""


@attrs.frozen
class ErrorInfo:
    """A failure as recorded: the exception's type and message, and whether it may be retried."""

    type: str
    message: str
    retryable: bool = True
    step: str | None = None


@attrs.frozen
class Done:
    """A completed compensatable step: its transition and the sequence number it ran at."""

    transition: str
    seq: int


@attrs.frozen
class Snapshot:
    """Everything the interpreter needs to decide what an instance does next.

    Attributes:
        instance_id: the instance's id (part of every idempotency key).
        state: the current state's name.
        status: see :class:`Status`.
        data: the context data (an instance of the saga's context type).
        pending: the transition to run next (``RUNNING``), or that failed (``FAILED``
            after the pivot); ``None`` while a branch is still to be chosen.
        attempt: the try number of the pending step or compensation (1-based).
        wake_at: ``RUNNING``/``COMPENSATING``: retry not before; ``WAITING``: timeout at.
        deadline: the run deadline (epoch seconds), if any.
        stack: completed compensatable steps since the last pivot, oldest first.
        pivoted: a pivot step has completed; the saga only goes forward.
        seq: transitions taken so far.
        error: the failure that stopped the forward path, if any.
        event: the payload of the event whose transition is pending.
        pivot_unknown: the pending pivot step may have taken effect (it was pending
            when the run was resumed after a crash, or a try's outcome was lost):
            from here the run only goes forward.
    """

    instance_id: str
    state: str
    status: Status
    data: Any = None
    pending: str | None = None
    attempt: int = 0
    wake_at: float | None = None
    deadline: float | None = None
    stack: tuple[Done, ...] = ()
    pivoted: bool = False
    seq: int = 0
    error: ErrorInfo | None = None
    event: Any = None
    pivot_unknown: bool = False


# -- outcomes: what happened since the last decision ------------------------------------


@attrs.frozen
class StepSucceeded:
    """The pending step returned; ``data`` is the new context data."""

    data: Any


@attrs.frozen
class StepFailed:
    """The pending step raised or timed out (``error.type == "StepTimeout"``)."""

    error: ErrorInfo


@attrs.frozen
class BranchChosen:
    """The driver evaluated the guards; ``transition`` passed (``None``: none did)."""

    transition: str | None


@attrs.frozen
class EventArrived:
    """An event was sent to the instance (``received_at``: when the inbox recorded it).

    The event is judged by when it was received, not by when it is consumed:
    one received before the wait timed out (or the deadline passed) is taken
    even if the timeout has passed by the time anything reads it.
    """

    event: str
    payload: Any = None
    received_at: float | None = None


@attrs.frozen
class CancelRequested:
    """Someone asked to cancel the run."""

    reason: str = "cancelled"


@attrs.frozen
class CompensationSucceeded:
    """The compensation on top of the stack returned; ``data`` is the new context
    data if it returned some (``None``: unchanged)."""

    data: Any = None


@attrs.frozen
class CompensationFailed:
    """The compensation on top of the stack raised or timed out."""

    error: ErrorInfo


@attrs.frozen
class RetryRequested:
    """Someone asked a ``failed`` instance to try again."""


Outcome = (
    StepSucceeded
    | StepFailed
    | BranchChosen
    | EventArrived
    | CancelRequested
    | CompensationSucceeded
    | CompensationFailed
    | RetryRequested
)

# -- decisions: what the driver does next ------------------------------------------------


@attrs.frozen
class RunStep:
    """Run the step of ``transition`` (try ``attempt``), then report the outcome."""

    transition: str
    attempt: int
    idempotency_key: str
    timeout: float | None


@attrs.frozen
class ChooseBranch:
    """Evaluate these transitions' guards in order and report the first that passes."""

    transitions: tuple[str, ...]


@attrs.frozen
class Sleep:
    """Nothing to do before ``until`` (a retry's backoff); then call ``decide`` again."""

    until: float


@attrs.frozen
class RunCompensation:
    """Run the compensation of ``transition`` (try ``attempt``), then report the outcome."""

    transition: str
    attempt: int
    idempotency_key: str
    timeout: float | None


@attrs.frozen
class Wait:
    """Release the instance until one of ``events`` arrives or ``until`` passes."""

    events: tuple[str, ...]
    until: float | None


@attrs.frozen
class Finish:
    """The instance is terminal with ``status``."""

    status: Status


Decision = RunStep | ChooseBranch | Sleep | RunCompensation | Wait | Finish


@attrs.frozen
class Record:
    """One history row, as the interpreter describes it (the driver adds timings)."""

    kind: HistoryKind
    from_state: str
    to_state: str
    transition: str | None = None
    attempt: int = 0
    error: ErrorInfo | None = None
    event: str | None = None


@attrs.frozen
class Next:
    """The interpreter's answer: persist ``snapshot`` with ``records``, then do ``decision``.

    ``records`` empty means nothing changed that needs persisting.
    """

    snapshot: Snapshot
    decision: Decision
    records: tuple[Record, ...] = ()


@attrs.frozen
class EventFit:
    """What the run makes of an event (or a cancel) from its inbox, as of now.

    ``verdict`` is ``"accept"`` (apply it now), ``"early"`` (keep it: a state the
    run can still reach takes it) or ``"late"`` (record it as not accepted, with
    ``reason``).
    """

    verdict: str
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """The event applies now."""
        return self.verdict == "accept"


ACCEPT, EARLY, LATE = "accept", "early", "late"

_MAX_CHAINED = 1000


class Interpreter:
    """Decides, for one definition, what an instance does next. Pure and reusable.

    Args:
        definition: the saga's compiled definition.
        rand: a source of uniform floats in [0, 1) for retry jitter.
    """

    def __init__(
        self, definition: Definition, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.definition = definition
        self.rand = rand
        self._transitions = definition.transitions
        self._automatic = definition.automatic_from
        self._events = definition.events_from
        self._states = definition.states
        self._later_events = _events_reachable(definition)

    # -- entry points -------------------------------------------------------------------

    def start(
        self,
        instance_id: str,
        saga_input: Any,
        data: Any,
        *,
        now: float,
        deadline: float | None = None,
    ) -> Next:
        """The first snapshot of a new instance, its START record and first decision."""
        del saga_input  # guards and steps see the input; the graph does not
        initial = self.definition.initial
        snapshot = self._enter(
            Snapshot(instance_id, initial, Status.RUNNING, data, deadline=deadline),
            initial,
            now,
        )
        record = Record(HistoryKind.START, initial, initial)
        return self._settle(snapshot, now, [record])

    def decide(self, snapshot: Snapshot, now: float, *, resumed: bool = False) -> Next:
        """What ``snapshot`` calls for at time ``now`` (after a sleep, or on recovery).

        ``resumed``: the snapshot was read back from the store by an engine that
        did not write it (recovery, a worker, a claim). A pivot step pending then
        may have been called before a crash: from here the run only goes forward.
        """
        if resumed and self._pivot_pending(snapshot):
            snapshot = attrs.evolve(snapshot, pivot_unknown=True)
        return self._settle(snapshot, now, [])

    # -- rules the drivers ask about -------------------------------------------------------

    def event_fit(self, snapshot: Snapshot, event: str, received_at: float) -> EventFit:
        """Whether an event received at ``received_at`` applies now, waits, or comes too late."""
        status = snapshot.status
        state = snapshot.state
        if status.is_terminal:
            return EventFit(LATE, f"the run had ended ({status}) when {event!r} was consumed")
        if status is Status.COMPENSATING:
            return EventFit(LATE, f"the run is compensating; it takes no more events ({event!r})")
        if status is Status.WAITING and event in self._events[state]:
            deadline = snapshot.deadline
            if deadline is not None and received_at >= deadline and not self._bound(snapshot):
                return EventFit(LATE, f"{event!r} arrived after the run's deadline")
            if snapshot.wake_at is not None and received_at >= snapshot.wake_at:
                return EventFit(
                    LATE, f"{event!r} arrived after the wait in state {state!r} timed out"
                )
            return EventFit(ACCEPT)
        if event in self._later_events[state]:
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

    def cancel_fit(self, snapshot: Snapshot, *, resumed: bool = False) -> EventFit:
        """Whether a cancel applies now (``"accept"``) or cannot any more (``"late"``)."""
        status = snapshot.status
        if status.is_terminal or status is Status.COMPENSATING:
            return EventFit(LATE, f"it is {status}")
        if snapshot.pivoted:
            return EventFit(LATE, "it has passed its pivot and only goes forward")
        if self._bound(snapshot) or (resumed and self._pivot_pending(snapshot)):
            return EventFit(LATE, "its pivot step may have taken effect, so it only goes forward")
        return EventFit(ACCEPT)

    def next_due(self, snapshot: Snapshot, now: float) -> float | None:
        """When a run released in ``snapshot`` next needs an engine (``None``: never by itself).

        Every run that is not terminal and not held has a due time, except one that
        waits for an event with neither a timeout nor a deadline (an event for it is
        found through the inbox).
        """
        status = snapshot.status
        if status.is_terminal:
            return None
        if status is Status.WAITING:
            return _earliest(snapshot)
        wake_at = snapshot.wake_at
        return wake_at if wake_at is not None and wake_at > now else now

    def next(self, snapshot: Snapshot, outcome: Outcome, now: float) -> Next:
        """Apply ``outcome`` to ``snapshot`` at time ``now`` and decide what follows.

        Raises:
            EventNotAllowed: the event does not fit the instance's state.
            CancelNotAllowed: the instance is terminal, compensating or past its pivot.
            RetryNotAllowed: a retry was asked of an instance that is not ``failed``.
            InvalidOperation: the outcome does not answer the pending decision.
        """
        match outcome:
            case StepSucceeded(data):
                t = self._pending(snapshot, Status.RUNNING)
                kind = HistoryKind.EVENT if t.event is not None else HistoryKind.FORWARD
                snapshot, record = self._advance(snapshot, t, data, now, kind)
                return self._settle(snapshot, now, [record])
            case StepFailed(error):
                return self._step_failed(snapshot, error, now)
            case BranchChosen(name):
                return self._branch_chosen(snapshot, name, now)
            case EventArrived(event, payload, received_at):
                return self._event(snapshot, event, payload, now, received_at)
            case CancelRequested(reason):
                return self._cancel(snapshot, reason, now)
            case CompensationSucceeded(data):
                return self._compensated(snapshot, data, now)
            case CompensationFailed(error):
                return self._compensation_failed(snapshot, error, now)
            case RetryRequested():
                return self._retry_requested(snapshot, now)
        raise InvalidOperation(f"unknown outcome {outcome!r}")  # pragma: no cover

    # -- forward path -------------------------------------------------------------------

    def _pending(self, snapshot: Snapshot, status: Status) -> TransitionDef:
        if snapshot.status is not status or snapshot.pending is None:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} has no pending step to report on "
                f"(status {snapshot.status}, state {snapshot.state!r})",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        return self._transitions[snapshot.pending]

    def _enter(self, snapshot: Snapshot, state: str, now: float) -> Snapshot:
        """The snapshot on arriving in ``state``: its status and what is pending there."""
        return self._arrive(
            snapshot,
            state,
            now,
            snapshot.data,
            snapshot.stack,
            snapshot.pivoted,
            snapshot.seq,
            snapshot.error,
        )

    def _arrive(
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
                (),
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

    def _advance(
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
        moved = self._arrive(snapshot, t.target, now, data, stack, pivoted, snapshot.seq + 1, None)
        return moved, record

    def _settle(self, snapshot: Snapshot, now: float, records: list[Record]) -> Next:
        """Apply the rules that need no outcome (deadline, timeouts, step-less edges); decide."""
        for _ in range(_MAX_CHAINED):
            status = snapshot.status
            if (
                (status is Status.RUNNING or status is Status.WAITING)
                and snapshot.deadline is not None
                and now >= snapshot.deadline
                and not self._bound(snapshot)
            ):
                error = ErrorInfo("DeadlinePassed", "the run deadline passed", False)
                snapshot = self._begin_compensation(snapshot, error, HistoryKind.DEADLINE, records)
                continue
            if status is Status.WAITING:
                if snapshot.wake_at is not None and now >= snapshot.wake_at:
                    snapshot = self._wait_timed_out(snapshot, now, records)
                    continue
                return Next(
                    snapshot,
                    Wait(self.definition.events_in(snapshot.state), _earliest(snapshot)),
                    tuple(records),
                )
            if status is Status.RUNNING:
                if snapshot.wake_at is not None and now < snapshot.wake_at:
                    return Next(snapshot, Sleep(snapshot.wake_at), tuple(records))
                if snapshot.pending is None:
                    names = tuple(t.name for t in self._automatic[snapshot.state])
                    return Next(snapshot, ChooseBranch(names), tuple(records))
                t = self._transitions[snapshot.pending]
                if t.step is None:
                    snapshot, record = self._advance(
                        snapshot, t, snapshot.data, now, HistoryKind.FORWARD
                    )
                    records.append(record)
                    continue
                key = f"{snapshot.instance_id}:{snapshot.seq}:{t.name}"
                decision: Decision = RunStep(t.name, snapshot.attempt, key, t.step.timeout)
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
                key = f"{snapshot.instance_id}:{done.seq}:{t.name}:undo"
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

    def _branch_chosen(self, snapshot: Snapshot, name: str | None, now: float) -> Next:
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
            return self._settle(attrs.evolve(snapshot, pending=name, attempt=1), now, [])
        state = self._states[snapshot.state]
        if self._events[snapshot.state]:
            wake_at = None if state.timeout is None else now + state.timeout
            waiting = attrs.evolve(snapshot, status=Status.WAITING, wake_at=wake_at)
            record = Record(HistoryKind.WAIT, snapshot.state, snapshot.state)
            return self._settle(waiting, now, [record])
        error = ErrorInfo(
            "NoTransitionAllowed",
            f"no guard out of state {snapshot.state!r} passed and it waits for no event",
            retryable=False,
        )
        records: list[Record] = []
        return self._settle(
            self._begin_compensation(snapshot, error, HistoryKind.FAILURE, records), now, records
        )

    def _event(
        self, snapshot: Snapshot, event: str, payload: Any, now: float, received_at: float | None
    ) -> Next:
        t = self._events[snapshot.state].get(event) if snapshot.status is Status.WAITING else None
        if t is None:
            accepted = self.definition.events_in(snapshot.state)
            if snapshot.status is not Status.WAITING:
                hint = f"it is {snapshot.status}, not waiting for events"
            elif accepted:
                hint = f"it accepts {', '.join(accepted)}"
            else:
                hint = "it accepts no events"
            raise EventNotAllowed(
                f"instance {snapshot.instance_id} in state {snapshot.state!r} cannot take event "
                f"{event!r}: {hint}",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        # an event is judged by when it was received: one that came before the wait timed
        # out is taken even if nothing consumed it until after (the inbox kept it)
        at = now if received_at is None else min(received_at, now)
        if self._overdue(snapshot, at):
            # the deadline or the wait's timeout passed before the event came: time wins
            return self._settle(snapshot, now, [])
        if t.step is None:
            moved, record = self._advance(snapshot, t, snapshot.data, now, HistoryKind.EVENT)
            return self._settle(moved, at, [record])
        running = attrs.evolve(
            snapshot, status=Status.RUNNING, pending=t.name, attempt=1, wake_at=None, event=payload
        )
        return self._settle(running, at, [])

    def _overdue(self, snapshot: Snapshot, now: float) -> bool:
        deadline_passed = (
            snapshot.deadline is not None and now >= snapshot.deadline and not self._bound(snapshot)
        )
        return deadline_passed or (snapshot.wake_at is not None and now >= snapshot.wake_at)

    def _pivot_pending(self, snapshot: Snapshot) -> bool:
        """A pivot step is the next thing to run (or to retry)."""
        if snapshot.status is not Status.RUNNING or snapshot.pending is None:
            return False
        step = self._transitions[snapshot.pending].step
        return step is not None and step.pivot

    def _bound(self, snapshot: Snapshot) -> bool:
        """The run only goes forward: its pivot took effect, or may have.

        A pivot may have taken effect once a try of it failed with an unknown
        outcome (a retryable error: a timeout, a lost answer) or it was pending
        when the run was resumed after a crash. Neither the deadline nor a cancel
        then compensates the steps before it.
        """
        if snapshot.pivoted:
            return True
        return self._pivot_pending(snapshot) and (snapshot.attempt > 1 or snapshot.pivot_unknown)

    def _wait_timed_out(self, snapshot: Snapshot, now: float, records: list[Record]) -> Snapshot:
        t = self.definition.timeout_from.get(snapshot.state)
        if t is None:
            error = ErrorInfo(
                "WaitTimedOut", f"no event arrived in state {snapshot.state!r} in time", False
            )
            return self._begin_compensation(snapshot, error, HistoryKind.TIMEOUT, records)
        if t.step is None:
            moved, record = self._advance(snapshot, t, snapshot.data, now, HistoryKind.TIMEOUT)
            records.append(record)
            return moved
        return attrs.evolve(
            snapshot, status=Status.RUNNING, pending=t.name, attempt=1, wake_at=None
        )

    def _step_failed(self, snapshot: Snapshot, error: ErrorInfo, now: float) -> Next:
        t = self._pending(snapshot, Status.RUNNING)
        error = attrs.evolve(error, step=t.name)
        # a transition without a step fails only through its guard: never retried
        policy = t.step.retry if t.step is not None else None
        if policy is not None and error.retryable and not policy.exhausted(snapshot.attempt):
            delay = policy.delay(snapshot.attempt, self.rand())
            retried = attrs.evolve(
                snapshot, attempt=snapshot.attempt + 1, wake_at=now + delay, error=error
            )
            record = Record(HistoryKind.RETRY, t.source, t.source, t.name, snapshot.attempt, error)
            return self._settle(retried, now, [record])
        records = [Record(HistoryKind.FAILURE, t.source, t.source, t.name, snapshot.attempt, error)]
        if self._bound(snapshot):
            # past the pivot (or with a pivot that may have taken effect) nothing is undone:
            # stop, keep the step pending for a retry, visible as failed
            failed = attrs.evolve(
                snapshot,
                status=Status.FAILED,
                error=error,
                wake_at=None,
                pivot_unknown=not snapshot.pivoted,
            )
            return Next(failed, Finish(Status.FAILED), tuple(records))
        compensating = self._begin_compensation(snapshot, error, None, records)
        return self._settle(compensating, now, records)

    def _begin_compensation(
        self,
        snapshot: Snapshot,
        error: ErrorInfo,
        kind: HistoryKind | None,
        records: list[Record],
    ) -> Snapshot:
        """Start compensating (or, past the pivot, fail), recording ``kind`` if given."""
        if kind is not None:
            records.append(Record(kind, snapshot.state, snapshot.state, snapshot.pending, 0, error))
        if self._bound(snapshot):
            # past the pivot nothing is undone: stop and wait for someone to retry
            return attrs.evolve(
                snapshot,
                status=Status.FAILED,
                error=error,
                wake_at=None,
                pivot_unknown=not snapshot.pivoted,
            )
        stack = snapshot.stack
        t = self._transitions[snapshot.pending] if snapshot.pending is not None else None
        if (
            snapshot.status is Status.RUNNING
            and t is not None
            and t.step is not None
            and t.step.compensate_on_failure
        ):
            # the pending step's effect is unknown: a try may have failed part-way, or run
            # before a crash that nothing recorded (an interpreter cannot tell). Its
            # compensation tolerates an effect that never happened, so undo it too,
            # under its idempotency key
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
        )

    # -- cancel, compensation, retry -----------------------------------------------------

    def _cancel(self, snapshot: Snapshot, reason: str, now: float) -> Next:
        fit = self.cancel_fit(snapshot)
        if not fit.accepted:
            raise CancelNotAllowed(
                f"instance {snapshot.instance_id} cannot be cancelled: {fit.reason}",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        error = ErrorInfo("Cancelled", reason, retryable=False)
        records: list[Record] = []
        compensating = self._begin_compensation(snapshot, error, HistoryKind.CANCEL, records)
        return self._settle(compensating, now, records)

    def _top(self, snapshot: Snapshot) -> TransitionDef:
        if snapshot.status is not Status.COMPENSATING or not snapshot.stack:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not compensating",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        return self._transitions[snapshot.stack[-1].transition]

    def _compensated(self, snapshot: Snapshot, data: Any, now: float) -> Next:
        t = self._top(snapshot)
        record = Record(HistoryKind.COMPENSATE, snapshot.state, t.source, t.name, snapshot.attempt)
        popped = attrs.evolve(
            snapshot,
            state=t.source,
            stack=snapshot.stack[:-1],
            attempt=1,
            wake_at=None,
            data=snapshot.data if data is None else data,
        )
        return self._settle(popped, now, [record])

    def _compensation_failed(self, snapshot: Snapshot, error: ErrorInfo, now: float) -> Next:
        t = self._top(snapshot)
        assert t.step is not None
        policy = t.step.compensation_retry
        error = attrs.evolve(error, step=f"{t.name}.undo")
        record_kind = HistoryKind.COMPENSATION_RETRY
        if error.retryable and not policy.exhausted(snapshot.attempt):
            delay = policy.delay(snapshot.attempt, self.rand())
            retried = attrs.evolve(snapshot, attempt=snapshot.attempt + 1, wake_at=now + delay)
            record = Record(
                record_kind, snapshot.state, snapshot.state, t.name, snapshot.attempt, error
            )
            return self._settle(retried, now, [record])
        failed = attrs.evolve(snapshot, status=Status.FAILED, error=error, wake_at=None)
        record = Record(
            HistoryKind.FAILURE, snapshot.state, snapshot.state, t.name, snapshot.attempt, error
        )
        return Next(failed, Finish(Status.FAILED), (record,))

    def _retry_requested(self, snapshot: Snapshot, now: float) -> Next:
        if snapshot.status is not Status.FAILED:
            raise RetryNotAllowed(
                f"instance {snapshot.instance_id} is {snapshot.status}; only a failed instance "
                "can be retried",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        if snapshot.pivot_unknown and snapshot.pending is not None:
            # the pivot may have taken effect: try it again rather than compensate
            resumed = attrs.evolve(snapshot, status=Status.RUNNING, attempt=1, wake_at=None)
        elif not snapshot.pivoted:
            resumed = attrs.evolve(snapshot, status=Status.COMPENSATING, attempt=1, wake_at=None)
        elif snapshot.pending is not None:
            resumed = attrs.evolve(snapshot, status=Status.RUNNING, attempt=1, wake_at=None)
        else:
            resumed = self._enter(snapshot, snapshot.state, now)
        record = Record(HistoryKind.RESUME, snapshot.state, snapshot.state, snapshot.pending)
        return self._settle(resumed, now, [record])


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


def _earliest(snapshot: Snapshot) -> float | None:
    times = [
        t
        for t in (snapshot.wake_at, snapshot.deadline if not snapshot.pivoted else None)
        if t is not None
    ]
    return min(times) if times else None
