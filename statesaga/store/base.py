"""The ``Store`` protocol and the records it reads and writes."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs

__all__ = ["KEEPABLE", "HistoryRow", "InboxRow", "InstanceRow", "Settle", "Store", "Write"]


@attrs.frozen
class InstanceRow:
    """One instance as stored. JSON fields hold unstructured (primitive) values.

    ``trace_context`` is the W3C trace context (``traceparent``, then
    ``;tracestate`` if any) of the span that started the run, when it was
    started with tracing on: later drives of the run join that trace.
    """

    id: str
    saga: str
    saga_version: int
    graph_hash: str
    entity_key: str | None
    idempotency_key: str | None
    correlation_id: str
    state: str
    status: str
    input: Any
    context: Any
    output: Any
    machine: dict[str, Any]
    error: dict[str, Any] | None
    attempt: int
    version: int
    epoch: int
    lease_owner: str | None
    lease_expires_at: float | None
    due_at: float | None
    deadline: float | None
    created_at: float
    updated_at: float
    trace_context: str | None = None
    #: claims only: whether its inbox held pending entries when it was claimed (None: unknown),
    #: so a claimed run with an empty inbox needs no read of it before it resumes
    inbox_pending: bool | None = attrs.field(default=None, eq=False)


@attrs.frozen
class HistoryRow:
    """One persisted transition (or failed attempt) of an instance."""

    instance_id: str
    version: int
    kind: str
    transition: str | None
    step: str | None
    from_state: str
    to_state: str
    attempt: int
    event: str | None
    error: dict[str, Any] | None
    epoch: int
    correlation_id: str
    started_at: float
    finished_at: float
    id: int | None = None

    @property
    def duration(self) -> float:
        """Seconds between the start of the work and its commit."""
        return self.finished_at - self.started_at


#: the columns of a :class:`Write` a writer may ask the store to leave as they are
KEEPABLE = frozenset({"status", "due_at", "lease_owner", "lease_expires_at"})


@attrs.frozen
class Write:
    """The columns a transition changes (JSON columns as already-encoded text).

    ``keep`` names columns (among :data:`KEEPABLE`, the indexed ones) that the
    store leaves as they are: their values here are ignored. A holder keeps
    what it knows it wrote last (a status, due time or lease owner that did not
    change), and a lease expiry it renewed a moment ago, so that an ordinary
    transition rewrites no index entry: on SQLite no index page is written, on
    PostgreSQL the update can stay on its heap page.
    """

    state: str
    status: str
    context: str
    machine: str
    error: str | None
    output: str | None
    attempt: int
    due_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    updated_at: float
    keep: frozenset[str] = frozenset()


@attrs.frozen
class InboxRow:
    """An event or cancel sent to a run, as the inbox keeps it.

    ``kind`` is ``"event"`` or ``"cancel"``; ``status`` is ``"pending"`` until a
    holder of the run consumes it, then ``"accepted"`` or ``"rejected"`` (with
    ``reason``). ``payload`` holds the unstructured event payload (or, for a
    cancel, ``{"reason": ...}``).
    """

    instance_id: str
    event_id: str
    kind: str
    event: str | None
    payload: Any
    status: str
    reason: str | None
    correlation_id: str | None
    received_at: float
    settled_at: float | None = None
    id: int | None = None


@attrs.frozen
class Settle:
    """What became of an inbox entry, written with the transition that consumed it."""

    id: int
    status: str
    reason: str | None
    settled_at: float


class Store(Protocol):
    """Where instances and their history live. ``SqlStore`` implements it."""

    def insert(
        self,
        row: InstanceRow,
        history: Sequence[HistoryRow],
        connection: Any = None,
        write: Write | None = None,
    ) -> None:
        """Insert a new instance with its first history rows, in one transaction.

        A fork's rows include one for the run it was forked from (its link),
        appended in the same transaction. With ``connection`` (a transaction of
        :meth:`transaction`), the rows join it and commit with it: a run whose
        first step is transactional is inserted with that step's transition
        (``write``: its new values; ``history``: the start's rows, then the
        transition's), in one transaction.

        Raises ``EntityBusy`` when the (saga, entity key) already has an open
        instance, and ``DuplicateStart`` when the idempotency key is taken.
        """

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction whose connection a transactional step can write through."""

    def transition(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        write: Write,
        history: Sequence[HistoryRow],
        connection: Any = None,
        settle: Sequence[Settle] = (),
    ) -> None:
        """Compare-and-set the instance on (version, epoch) and append history rows.

        ``settle`` marks inbox entries consumed, in the same transaction.
        Raises ``FencedOut`` when the row's version or epoch moved on.
        """

    def migrate(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        saga: tuple[int, str],
        write: Write,
        history: Sequence[HistoryRow],
    ) -> None:
        """Move a claimed instance onto (saga version, graph hash) ``saga`` with ``write``.

        One transaction: a compare-and-set on (version, epoch), like ``transition``,
        that also rewrites the saga version and graph hash, and its history rows.
        Raises ``FencedOut`` when the row's version or epoch moved on.
        """

    def claim(
        self, instance_id: str, version: int, owner: str, expires_at: float, now: float
    ) -> InstanceRow:
        """Take the instance's lease and bump its epoch (the fencing token)."""

    def extend_lease(self, instance_id: str, epoch: int, expires_at: float) -> bool:
        """Push the lease's expiry out; ``False`` when the epoch moved on."""

    def extend_leases(self, leases: Sequence[tuple[str, int]], expires_at: float) -> set[str]:
        """Push out many leases in one statement; the ids whose (id, epoch) still matched."""

    def release_lease(self, instance_id: str, epoch: int, due_at: float | None) -> bool:
        """Let the lease go without a transition, due at ``due_at``; ``False`` if fenced out.

        The caller says when the run is next due (the core's ``due_when_let_go``).
        """

    def get(self, instance_id: str) -> InstanceRow | None:
        """The instance with that id."""

    def find(
        self, saga: str, *, entity_key: str | None = None, idempotency_key: str | None = None
    ) -> InstanceRow | None:
        """The open instance holding an entity key, or the one with an idempotency key."""

    def list(
        self,
        *,
        saga: str | None = None,
        status: str | None = None,
        entity_key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> builtins.list[InstanceRow]:
        """Instances, newest first; ``since``/``until`` bound when they were started."""

    def list_page(
        self,
        *,
        saga: str | None = None,
        status: str | None = None,
        entity_key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> builtins.list[InstanceRow]:
        """One page of instances, newest first; ``before`` is the last (created_at, id) seen."""

    def count_by_status(self, saga: str | None = None) -> dict[tuple[str, int, str], int]:
        """How many instances there are per (saga, version, status)."""

    def history(self, instance_id: str) -> builtins.list[HistoryRow]:
        """An instance's history, oldest first."""

    def ids_starting_with(self, prefix: str, limit: int = 10) -> builtins.list[str]:
        """Up to ``limit`` instance ids that start with ``prefix``, sorted."""

    def due(self, now: float, limit: int) -> builtins.list[InstanceRow]:
        """Instances that need work now: expired leases, due retries, timeouts, deadlines."""

    def claim_due(
        self,
        now: float,
        limit: int,
        owner: str,
        expires_at: float,
        sagas: Sequence[tuple[str, int]] | None = None,
    ) -> builtins.list[InstanceRow]:
        """Claim up to ``limit`` instances that need work now (bumping their epochs)."""

    def receive(self, entry: InboxRow) -> tuple[InboxRow, bool]:
        """Record an event or cancel in the run's inbox, in one short transaction.

        Returns the entry as stored and whether it was already there (the same
        ``event_id`` for the same run): a duplicate is returned, not stored twice.
        """

    def pending(self, instance_id: str, connection: Any = None) -> builtins.list[InboxRow]:
        """The run's inbox entries still to consume, oldest first (in ``connection``'s
        transaction, if given)."""

    def inbox(self, instance_id: str) -> builtins.list[InboxRow]:
        """Every inbox entry of the run, oldest first."""

    def inbox_entry(self, instance_id: str, event_id: str) -> InboxRow | None:
        """One inbox entry, by its event id."""

    def dump(self) -> dict[str, builtins.list[tuple[Any, ...]]]:
        """Every row of every table (for tests comparing before and after)."""

    def close(self) -> None:
        """Release the store's connections."""
