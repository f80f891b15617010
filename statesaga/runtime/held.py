"""A run an engine holds while it works on it, and what a transition may need to put back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from statesaga.core import Interpreter, Snapshot
from statesaga.definition import Definition
from statesaga.locks.base import Lease
from statesaga.store.base import HistoryRow, InboxRow, InstanceRow

if TYPE_CHECKING:
    from statesaga.observability import RunTrace

__all__ = ["HeldRun", "Kept"]


@attrs.define
class HeldRun:
    """A run this engine holds: its definition, its last persisted snapshot and its leases."""

    definition: Definition
    core: Interpreter
    id: str
    version: int
    epoch: int
    snapshot: Snapshot
    input: Any
    correlation_id: str
    key: str | None
    lease: Lease | None = None
    leased: bool = True
    encoded_data: Any = None  # the data object whose JSON is ``encoded_context``
    encoded_context: str = "null"
    output: Any = None
    created_at: float = 0.0
    updated_at: float = 0.0
    renewed_at: float = 0.0
    step_deadline: float | None = None
    lost: bool = False
    #: as the claim saw it: ``False`` spares the read of an empty inbox when the run resumes
    inbox_pending: bool | None = None
    #: the W3C trace context stored with the run (``None``: started untraced)
    trace_context: str | None = None
    #: the trace of this engine call's drive, while the observer traces it
    trace: RunTrace | None = None
    #: the inbox entry whose event the run's guards are judging (a ``JudgeEvent``)
    judging: InboxRow | None = None
    #: the key it was started with (a child run's names its parent: ``core.parent_of``)
    idempotency_key: str | None = None
    #: (status, due_at, lease_owner) as the instance row holds them since this holder's
    #: insert, claim or last write (``None``: not known): a write keeps what did not change
    stored: tuple[str, float | None, str | None] | None = None
    #: a run being started whose row is not written yet: its first step is transactional,
    #: and the row (with these first history rows) is inserted in that step's transaction
    unsaved: tuple[InstanceRow, list[HistoryRow]] | None = None

    @property
    def lock_key(self) -> str:
        """The entity lock's key: the entity key, or the instance's own."""
        return self.key or f"instance:{self.id}"


@attrs.frozen
class Kept:
    """What a transition changes on a held run, kept to put back if its commit failed."""

    version: int
    snapshot: Snapshot
    leased: bool
    updated_at: float
    renewed_at: float
    output: Any
    encoded_data: Any
    encoded_context: str
    stored: tuple[str, float | None, str | None] | None
    unsaved: tuple[InstanceRow, list[HistoryRow]] | None

    @classmethod
    def of(cls, run: HeldRun) -> Kept:
        """What ``run`` holds now."""
        return cls(
            run.version,
            run.snapshot,
            run.leased,
            run.updated_at,
            run.renewed_at,
            run.output,
            run.encoded_data,
            run.encoded_context,
            run.stored,
            run.unsaved,
        )

    def restore(self, run: HeldRun) -> None:
        """Put ``run`` back as it was."""
        run.version, run.snapshot, run.leased = self.version, self.snapshot, self.leased
        run.updated_at, run.renewed_at, run.output = self.updated_at, self.renewed_at, self.output
        run.encoded_data, run.encoded_context = self.encoded_data, self.encoded_context
        run.stored, run.unsaved = self.stored, self.unsaved
