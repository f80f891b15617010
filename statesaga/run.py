"""What the engines return: a run's status, output and history."""

from __future__ import annotations

import enum
from typing import Any, Generic

import attrs
from typing_extensions import TypeVar

from statesaga.core import ErrorInfo, HistoryKind, Status

__all__ = ["DeliveryStatus", "InboxEntry", "HistoryEntry", "Run"]

# defaults let ``Run`` stand for ``Run[Any, Any, Any]``: a run read without its saga
InputT = TypeVar("InputT", default=Any)
DataT = TypeVar("DataT", default=Any)
OutputT = TypeVar("OutputT", default=Any)


class DeliveryStatus(enum.StrEnum):
    """What became of an event or cancel sent to a run."""

    PENDING = "pending"
    """Recorded; the run takes it as soon as it can (its holder, or a worker)."""
    ACCEPTED = "accepted"
    """Applied to the run, in the transition that consumed it."""
    REJECTED = "rejected"
    """Recorded as not accepted: the run had moved past it or ended (see ``reason``)."""


@attrs.frozen
class InboxEntry:
    """One event or cancel in a run's inbox, as ``show`` and ``Engine.get`` report it."""

    event_id: str
    kind: str
    event: str | None
    payload: Any
    status: DeliveryStatus
    reason: str | None
    received_at: float
    settled_at: float | None


@attrs.frozen
class HistoryEntry:
    """One persisted transition (or failed attempt) of a run.

    ``step`` names the function that ran (``module.function``, or the
    compensation's name for ``compensate`` entries); times are epoch seconds.

    An operator's records (``resolved``, ``forked_from``, ``forked_to``) carry
    ``note`` (what they said), ``by`` (who, when known) and, for a fork,
    ``link``: the id of the other run (the original, or the fork).
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
    note: str | None = None
    by: str | None = None
    link: str | None = None

    @property
    def duration(self) -> float:
        """Seconds from the start of the work to its commit."""
        return self.finished_at - self.started_at


@attrs.frozen
class Run(Generic[InputT, DataT, OutputT]):
    """A saga instance as the engine sees it after an operation, or when asked.

    ``Run[I, D, O]`` carries the saga's types: ``engine.start(CompleteCart, ...)``
    returns a ``Run[CompleteCartInput, CheckoutData, CheckoutReceipt]``, so ``run.data``
    is typed for mypy. A run read without naming its saga (``engine.get(id)``,
    ``engine.list()``) is a ``Run[Any, Any, Any]``; pass ``saga=`` to get it typed.

    Attributes:
        id: the instance id.
        saga: the saga's name; ``version`` its version.
        status: see :class:`~statesaga.Status`.
        state: the current state.
        key: the entity key the run holds, if any.
        correlation_id: carried on every record and log line of the run.
        input: the typed input.
        data: the typed context data as last persisted.
        output: for a completed run of a saga with ``output``, its typed output
            (``None`` before completion, or when the saga declares none).
        error: why the forward path stopped (step failure, deadline, cancel),
            or why a ``failed`` run needs attention.
        history: the persisted transitions, oldest first (filled by ``get``).
        inbox: the events and cancels sent to the run, oldest first (filled by ``get``).
        parent_id: for a child run (started by a parent's child step), the parent's id;
            its children are ``engine.children(run.id)``.
    """

    id: str
    saga: str
    version: int
    status: Status
    state: str
    key: str | None
    correlation_id: str
    input: InputT
    data: DataT
    output: OutputT | None
    error: ErrorInfo | None
    created_at: float
    updated_at: float
    history: tuple[HistoryEntry, ...] = ()
    inbox: tuple[InboxEntry, ...] = ()
    parent_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Completed, compensated or failed."""
        return self.status.is_terminal
