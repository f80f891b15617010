"""What the engines return: a run's status, output and history."""

from __future__ import annotations

from typing import Any

import attrs

from statesaga.core import ErrorInfo, HistoryKind, Status
from statesaga.delivery import InboxEntry

__all__ = ["HistoryEntry", "Run"]


@attrs.frozen
class HistoryEntry:
    """One persisted transition (or failed attempt) of a run.

    ``step`` names the function that ran (``module.function``, or the
    compensation's name for ``compensate`` entries); times are epoch seconds.
    """

    kind: HistoryKind
    from_state: str
    to_state: str
    transition: str | None
    step: str | None
    attempt: int
    event: str | None
    error: ErrorInfo | None
    version: int
    epoch: int
    started_at: float
    finished_at: float

    @property
    def duration(self) -> float:
        """Seconds from the start of the work to its commit."""
        return self.finished_at - self.started_at


@attrs.frozen
class Run:
    """A saga instance as the engine sees it after an operation, or when asked.

    Attributes:
        id: the instance id.
        saga: the saga's name; ``version`` its version.
        status: see :class:`~statesaga.Status`.
        state: the current state.
        key: the entity key the run holds, if any.
        correlation_id: carried on every record and log line of the run.
        input: the typed input.
        data: the typed context data as last persisted.
        output: for a completed run of a saga with ``output``, its typed output.
        error: why the forward path stopped (step failure, deadline, cancel),
            or why a ``failed`` run needs attention.
        history: the persisted transitions, oldest first (filled by ``get``).
        inbox: the events and cancels sent to the run, oldest first (filled by ``get``).
    """

    id: str
    saga: str
    version: int
    status: Status
    state: str
    key: str | None
    correlation_id: str
    input: Any
    data: Any
    output: Any
    error: ErrorInfo | None
    created_at: float
    updated_at: float
    history: tuple[HistoryEntry, ...] = ()
    inbox: tuple[InboxEntry, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """Completed, compensated or failed."""
        return self.status.is_terminal
