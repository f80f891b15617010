"""The core's words for where a run stands and what went wrong.

Statuses and the status sets every other room uses instead of its own copy,
history record kinds, error kinds, the recorded failure (:class:`ErrorInfo`),
and the names and idempotency keys steps and compensations get.

>>> Status.FAILED.is_terminal, Status.FAILED.is_open
(True, True)
>>> OPEN_STATUSES
('running', 'waiting', 'compensating', 'failed')
>>> undo_name("reserve")
'reserve.undo'
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "CLOSED_STATUSES",
    "OPEN_STATUSES",
    "TERMINAL_STATUSES",
    "UNDO_SUFFIX",
    "ErrorInfo",
    "ErrorKind",
    "HistoryKind",
    "Status",
    "idempotency_key",
    "undo_name",
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
#: statuses of a run that is over for good and holds nothing (completed, compensated)
CLOSED_STATUSES: tuple[str, ...] = tuple(s.value for s in Status if s in _CLOSED)


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
    RESOLVED = "resolved"
    """An operator ended a ``failed`` run as compensated or completed (with a note)."""
    FORKED_FROM = "forked_from"
    """The first record of a fork: the run it was forked from (``link``) and the step."""
    FORKED_TO = "forked_to"
    """A fork was made of this run: the new run (``link``) and the step it starts from."""
    MIGRATED = "migrated"
    """The run moved onto a newer version of its saga (a declared migration)."""

    @property
    def by_operator(self) -> bool:
        """A record an operator's act wrote (it keeps a note, who and a link, not an error)."""
        return self in _OPERATOR_KINDS


_OPERATOR_KINDS = frozenset({HistoryKind.RESOLVED, HistoryKind.FORKED_FROM, HistoryKind.FORKED_TO})


class ErrorKind(enum.StrEnum):
    """What stopped a step or a run: the one vocabulary code compares, never type names.

    ``STEP_ERROR`` and ``STEP_TIMEOUT`` come from running application code (a
    step, a compensation, a guard, the saga's output); the others are decided
    by the interpreter itself.
    """

    STEP_ERROR = "step_error"
    """A step, compensation, guard or output function raised."""
    STEP_TIMEOUT = "step_timeout"
    """A step or compensation ran longer than its timeout."""
    DEADLINE = "deadline"
    """The run's deadline passed."""
    WAIT_TIMEOUT = "wait_timeout"
    """No event arrived in a waiting state before its timeout."""
    CANCELLED = "cancelled"
    """Someone cancelled the run."""
    NO_TRANSITION = "no_transition"
    """No guard out of a state passed, and the state waits for no event."""
    REJECTED = "rejected"
    """An event or a cancel from the inbox that the run could not take."""

    @property
    def is_timeout(self) -> bool:
        """A step timeout, the run's deadline or a wait's timeout: time ran out."""
        return self in _TIMEOUTS


_TIMEOUTS = frozenset({ErrorKind.STEP_TIMEOUT, ErrorKind.DEADLINE, ErrorKind.WAIT_TIMEOUT})

#: the suffix of a compensation's step name: ``"reserve.undo"`` undoes ``"reserve"``
UNDO_SUFFIX = ".undo"


def undo_name(transition: str) -> str:
    """The step name of ``transition``'s compensation (in contexts, errors and logs)."""
    return transition + UNDO_SUFFIX


def idempotency_key(
    instance_id: str, seq: int, transition: str, role: Literal["step", "undo", "guard"] = "step"
) -> str:
    """The idempotency key a step (its compensation, its guard) gets: the same on every try.

    ``seq`` is the run's transition count when the step was decided (for a
    compensation: when its step ran), so a step that runs twice in one run
    (a loop) gets two keys.

    >>> idempotency_key("i-1", 2, "charge"), idempotency_key("i-1", 2, "charge", "undo")
    ('i-1:2:charge', 'i-1:2:charge:undo')
    """
    key = f"{instance_id}:{seq}:{transition}"
    return key if role == "step" else f"{key}:{role}"


@attrs.frozen
class ErrorInfo:
    """A failure as recorded: what kind it is, the exception's type, message and details.

    Attributes:
        type: the exception's qualified type name (``"shop.errors.OutOfStock"``;
            builtins and ``StepTimeout`` unqualified), or the interpreter's own name
            for what it decided (``"DeadlinePassed"``, ``"Cancelled"``...): for people.
        message: what went wrong, for people.
        retryable: whether the step may be tried again.
        step: the step that failed (``"<transition>.undo"`` for a compensation).
        kind: what stopped the step or the run (see :class:`ErrorKind`): for code.
        details: JSON values the exception carried (see :mod:`statesaga.failures`),
            or the details a cancel was given.

    >>> info = ErrorInfo("shop.OutOfStock", "only 1 left", False, kind=ErrorKind.STEP_ERROR,
    ...                  details={"sku": "mug", "available": 1})
    >>> info.details["available"], info.kind.is_timeout, info.undo
    (1, False, False)
    """

    type: str
    message: str
    retryable: bool = True
    step: str | None = None
    kind: ErrorKind = ErrorKind.STEP_ERROR
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def undo(self) -> bool:
        """The failure is a compensation's."""
        return self.step is not None and self.step.endswith(UNDO_SUFFIX)
