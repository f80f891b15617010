"""Recovery: claiming the runs that need work and driving each from where it stopped.

This is the public API behind ``Engine.recover`` and ``Worker``: claim a
batch of due runs (crashed holders, due retries, timeouts, deadlines), then
drive each claimed run, or let the ones left over go for another engine.

>>> from statesaga import Engine
>>> with Engine("sqlite://") as engine:
...     engine.runtime.recovery.claim_due(10)
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from statesaga.core import Status, due_when_let_go
from statesaga.errors import EntityBusy, FencedOut, SagaNotRegistered
from statesaga.runtime.claims import Claims
from statesaga.runtime.codec import held_of
from statesaga.runtime.drive import Drive
from statesaga.runtime.inbox import Inbox
from statesaga.runtime.requests import Driver, LockOp
from statesaga.store.base import InstanceRow

__all__ = ["RECOVERY_BATCH", "Recovery"]

#: how many runs ``recover`` claims at a time (each batch's leases start together)
RECOVERY_BATCH = 20


class Recovery:
    """Claims due runs for this engine and drives them."""

    def __init__(
        self, claims: Claims, drive: Drive, inbox: Inbox, clock: Callable[[], float]
    ) -> None:
        self.claims = claims
        self.drive = drive
        self.inbox = inbox
        self.clock = clock

    def claim_due(self, limit: int) -> list[InstanceRow]:
        """Claim up to ``limit`` runs that need work, of the sagas this engine drives.

        Fewer (or none) when the engine is near ``max_in_flight`` or its lease
        keeper is late. Each run claimed holds a slot of the engine's until
        it is driven (``recover``) or let go (``let_go``).
        """
        keeper = self.drive.keeper
        room = keeper.reserve(limit)
        if not room:
            return []
        try:
            now = self.clock()
            leasing = self.claims.leasing
            rows = self.claims.store.claim_due(
                now,
                room,
                leasing.owner,
                now + leasing.lease_ttl,
                sagas=self.claims.registry.keys,
            )
        except BaseException:
            keeper.release(room)
            raise
        keeper.release(room - len(rows))
        keeper.track_claimed(rows)  # kept while they wait their turn in the batch
        return rows

    def let_go(self, rows: Iterable[InstanceRow]) -> None:
        """Release claimed runs undriven, for another engine to take at once."""
        for row in rows:
            try:
                self._let_go(row)
            finally:
                self.drive.keeper.release()

    def recover(self, row: InstanceRow) -> Driver:
        """Drive a run that ``claim_due`` claimed for this engine (pumped by an engine).

        Raises ``SagaNotRegistered`` (the claim let go) for a saga version this
        engine does not drive, ``EntityBusy`` when the entity's lock is held (the
        run stays due, a little later) and ``FencedOut`` when another engine
        took the run over meanwhile.
        """
        keeper = self.drive.keeper
        try:
            result = yield from self._recover(row)
        finally:
            keeper.forget_claimed(row.id)
            keeper.release()  # the slot ``claim_due`` took for the run
        return (yield from self.inbox.after_release(result))

    def _recover(self, row: InstanceRow) -> Driver:
        try:
            definition, core = self.claims.registry.for_row(row)
        except SagaNotRegistered:
            self._let_go(row)
            raise
        run = held_of(row, definition, core, self.clock())
        claimed = self.drive.keeper.claimed(row.id)
        if claimed is not None:
            if claimed.lost:
                raise FencedOut(
                    f"run {row.id} was claimed by another engine while it waited its turn "
                    "in this engine's batch; left to that engine",
                    saga=row.saga,
                    instance_id=row.id,
                )
            run.renewed_at = claimed.renewed_at  # kept since the claim: renewed as of then
        elif row.lease_expires_at is not None:
            # claimed with a batch, perhaps a while ago: its lease runs from the claim
            run.renewed_at = min(
                run.renewed_at, row.lease_expires_at - self.claims.leasing.lease_ttl
            )
        transitions = self.drive.transitions
        locks = self.claims.locks
        if locks.locks is not None:
            lease = yield LockOp(row.entity_key or f"instance:{row.id}")
            if lease is None:
                # someone holds the entity: the run stays due, a little later
                transitions.release(run, busy=True)
                raise EntityBusy(f"{row.entity_key} is busy; left for later", key=row.entity_key)
            run.lease = lease
        try:
            now = self.clock()
            nxt = transitions.next_step(run, now)
            return (yield from self.drive.hold(run, nxt, started=now, operation="recover"))
        finally:
            if run.lease is not None:
                locks.release(run.lease)

    def _let_go(self, row: InstanceRow) -> None:
        """Release a claimed run undriven; when it is next due, the core says."""
        self.drive.keeper.forget_claimed(row.id)
        due = due_when_let_go(Status(row.status), row.due_at, self.clock(), row.machine)
        self.claims.store.release_lease(row.id, row.epoch, due)
