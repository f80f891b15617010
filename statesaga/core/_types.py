"""The core's vocabulary: the snapshot, outcomes, decisions and records.

Plain frozen values, no behaviour beyond a property or two: what the
interpreter reads (:class:`Snapshot`), what it is told (the outcomes), and what
it answers (:class:`Next`, carrying a decision and history records). Statuses,
kinds and errors are in :mod:`statesaga.core._kinds` (re-exported here).

>>> Status.FAILED.is_terminal, Status.FAILED.is_open
(True, True)
>>> OPEN_STATUSES
('running', 'waiting', 'compensating', 'failed')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

from statesaga.core._kinds import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    UNDO_SUFFIX,
    ErrorInfo,
    ErrorKind,
    HistoryKind,
    Status,
    idempotency_key,
    undo_name,
)
from statesaga.core._parallel_types import (
    BranchFailed,
    BranchProgress,  # noqa: F401 - named in Forking's annotations, resolved below
    BranchSucceeded,
    Forking,
    RunBranches,
)

__all__ = [
    "ACCEPT",
    "CLOSED_STATUSES",
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
    "ErrorKind",
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
    "ResolveRequested",
    "RetryRequested",
    "RunCompensation",
    "RunStep",
    "Sleep",
    "Snapshot",
    "Status",
    "StepFailed",
    "StepSucceeded",
    "UNDO_SUFFIX",
    "TimeoutMeasured",
    "Wait",
    "idempotency_key",
    "undo_name",
]


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
        forking: ``RUNNING`` the parallel transition ``pending``: how far each of its
            branches got (``None`` outside a fork).
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
    forking: Forking | None = None


# -- outcomes: what happened since the last decision ------------------------------------


@attrs.frozen
class StepSucceeded:
    """The pending step returned; ``data`` is the new context data."""

    data: Any


@attrs.frozen
class StepFailed:
    """The pending step raised or timed out (``error.kind is ErrorKind.STEP_TIMEOUT``)."""

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
    """Someone asked to cancel the run; ``details`` go to the recorded error's details."""

    reason: str = "cancelled"
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


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


@attrs.frozen
class ResolveRequested:
    """An operator repaired a ``failed`` run by hand and ends it with ``status``.

    ``status`` is ``COMPENSATED`` or ``COMPLETED``; ``note`` (required) says what
    was done, ``by`` who did it.
    """

    status: Status
    note: str
    by: str | None = None


# -- decisions: what the driver does next ------------------------------------------------


@attrs.frozen
class RunStep:
    """Run the step of ``transition`` (try ``attempt``), then report the outcome.

    ``completes``: the transition ends the run (its target is final), so the
    driver makes the saga's output from the step's result.
    """

    transition: str
    attempt: int
    idempotency_key: str
    timeout: float | None
    completes: bool = attrs.field(default=False, repr=False)


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
    note: str | None = None
    """An operator's record (``HistoryKind.by_operator``): what they said."""
    by: str | None = None
    """An operator's record: who acted, when known."""
    link: str | None = None
    """A fork's records: the id of the other run (the original, or the fork)."""

    @property
    def undo(self) -> bool:
        """The record is about a compensation (it ran, is retried, or failed for good)."""
        return self.kind in _UNDO_KINDS or (self.error is not None and self.error.undo)


_UNDO_KINDS = frozenset({HistoryKind.COMPENSATE, HistoryKind.COMPENSATION_RETRY})


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


# the values of parallel branches name these in their annotations: resolved here, once
# both exist, for cattrs (which structures snapshots) and for readers of attrs.fields
for _value in (Forking, RunBranches, BranchSucceeded, BranchFailed):
    attrs.resolve_types(_value, globals())

Outcome: TypeAlias = (
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
    | ResolveRequested
    | BranchSucceeded
    | BranchFailed
)

Decision: TypeAlias = (
    RunStep
    | ChooseBranch
    | JudgeEvent
    | MeasureTimeout
    | Sleep
    | RunCompensation
    | Wait
    | Finish
    | RunBranches
)
