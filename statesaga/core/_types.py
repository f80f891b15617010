"""The core's vocabulary: statuses, the snapshot, outcomes, decisions and records.

Plain frozen values, no behaviour beyond a property or two: what the
interpreter reads (:class:`Snapshot`), what it is told (the outcomes), what
it answers (:class:`Next`, carrying a decision and history records), and the
status sets every other room uses instead of its own copy.

>>> Status.FAILED.is_terminal, Status.FAILED.is_open
(True, True)
>>> OPEN_STATUSES
('running', 'waiting', 'compensating', 'failed')
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = [
    "ACCEPT",
    "EARLY",
    "LATE",
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
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
    "EventJudged",
    "Finish",
    "HistoryKind",
    "JudgeEvent",
    "MeasureTimeout",
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
    "TimeoutMeasured",
    "Wait",
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
        measure_timeout: ``WAITING`` in a state whose timeout is computed per run,
            not measured yet: the driver is asked for it (:class:`MeasureTimeout`)
            before the run waits, and events wait in the inbox until then.
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
    measure_timeout: bool = False


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
class EventJudged:
    """The driver evaluated the guards a :class:`JudgeEvent` asked for, in order.

    ``transition``: the first whose guard passed (``None``: none did); ``error``:
    a guard raised (the event is refused, with the error as the reason).
    """

    event: str
    payload: Any = None
    received_at: float | None = None
    transition: str | None = None
    error: ErrorInfo | None = None


@attrs.frozen
class TimeoutMeasured:
    """The driver called the waiting state's timeout function: what it returned
    (seconds, a ``timedelta`` or ``None``), or the error it raised."""

    value: Any = None
    error: ErrorInfo | None = None


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
    | EventJudged
    | TimeoutMeasured
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
class JudgeEvent:
    """Evaluate these event transitions' guards in order, with the event's payload as
    ``ctx.event``, and report :class:`EventJudged` (the first that passes wins)."""

    event: str
    transitions: tuple[str, ...]
    payload: Any = None
    received_at: float | None = None


@attrs.frozen
class MeasureTimeout:
    """Call the timeout function of waiting state ``state`` and report
    :class:`TimeoutMeasured`; the run waits once its answer is persisted."""

    state: str


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


Decision = (
    RunStep | ChooseBranch | JudgeEvent | MeasureTimeout | Sleep | RunCompensation | Wait | Finish
)


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
