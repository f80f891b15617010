"""Carrying out declared migrations: moving runs of an older version onto a newer one.

The core's :class:`~statesaga.core.Migrator` says which runs may move and to
which snapshot; this room lists the runs, runs the context function, claims
each run (its epoch bumped, as recovery does) and writes its move in one
transaction with a ``migrated`` history record, the run let go with its next
due time. A run held by a live lease is skipped, and a run whose context the
function (or the new context type) refuses is left as it was; both are
reported. Nothing here takes the entity lock: the claim's compare-and-set is
the guard, as it is for every write.

>>> from statesaga import Engine
>>> with Engine("sqlite://") as engine:
...     engine.runtime.migrations.open_runs("checkout", 1)
[]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from statesaga.core import Migrator, Snapshot, Status, due_when_let_go
from statesaga.definition import Definition
from statesaga.errors import EntityBusy, FencedOut, InvalidOperation, SagaNotRegistered
from statesaga.migration import MigrationEntry, MigrationReport
from statesaga.runtime.codec import Leasing, encode, machine_of, snapshot_of
from statesaga.runtime.registry import Registry, definition_of
from statesaga.runtime.requests import SagaRef
from statesaga.serde import converter, structure
from statesaga.store.base import HistoryRow, InstanceRow, Store, Write

__all__ = ["MIGRATION_PAGE", "Migrations"]

log = logging.getLogger("statesaga.migration")

#: runs read per page while listing the runs to migrate
MIGRATION_PAGE = 200

_MOVABLE = ("waiting", "running", "compensating", "failed")


class Migrations:
    """Moves runs of one version of a saga onto a newer version that declares how."""

    def __init__(
        self, store: Store, registry: Registry, leasing: Leasing, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.registry = registry
        self.leasing = leasing
        self.clock = clock

    def target(self, saga: SagaRef, to_version: int | None) -> Definition:
        """The registered version runs move onto: ``to_version``, or the class's or newest."""
        if not isinstance(saga, str):
            definition = definition_of(saga)
            self.registry.resolve(definition)
            if to_version is not None and to_version != definition.version:
                raise InvalidOperation(
                    f"{definition.name!r} version {definition.version} was given with "
                    f"to_version={to_version}; pass that version's class, or its name"
                )
            saga, to_version = definition.name, definition.version
        if to_version is None:
            to_version = self.registry.resolve(saga)[0].version
        found = self.registry.get(saga, to_version)
        if found is None:
            raise SagaNotRegistered(
                f"saga {saga!r} version {to_version} is not registered; register the class "
                "that declares the migration (it runs the moved runs)",
                saga=saga,
            )
        return found

    def open_runs(self, saga: str, version: int) -> list[InstanceRow]:
        """The runs of ``saga`` version ``version`` that have not ended, oldest first."""
        return sorted(self._open_runs(saga, version), key=lambda row: (row.created_at, row.id))

    def _open_runs(self, saga: str, version: int) -> Iterator[InstanceRow]:
        for status in _MOVABLE:
            before = None
            while True:
                page = self.store.list_page(
                    saga=saga, status=status, before=before, limit=MIGRATION_PAGE
                )
                yield from (row for row in page if row.saga_version == version)
                if len(page) < MIGRATION_PAGE:
                    break
                before = (page[-1].created_at, page[-1].id)

    def migrate(
        self,
        saga: SagaRef,
        *,
        from_version: int,
        to_version: int | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> MigrationReport:
        """Move the waiting and due runs of ``from_version`` (see ``Engine.migrate``)."""
        target = self.target(saga, to_version)
        rule = Migrator(target, from_version)
        rows = self.open_runs(target.name, from_version)
        if limit is not None:
            rows = rows[:limit]
        entries = [self._one(rule, row, dry_run) for row in rows]
        return MigrationReport(target.name, from_version, target.version, dry_run, tuple(entries))

    def _one(self, rule: Migrator, row: InstanceRow, dry_run: bool) -> MigrationEntry:
        def entry(outcome: str, to: str | None = None, reason: str | None = None) -> MigrationEntry:
            return MigrationEntry(row.id, row.status, row.state, to, outcome, reason)

        now = self.clock()
        try:
            snapshot = snapshot_of(row, rule.source)
        except Exception as error:
            return entry(
                "failed",
                reason=f"its stored context does not fit version {rule.source.version}: {error}",
            )
        fit = rule.fit(snapshot, row.graph_hash)
        if not fit.moves:
            return entry("skipped", reason=fit.reason)
        if row.lease_owner is not None and (row.lease_expires_at or 0.0) > now:
            return entry(
                "skipped",
                fit.state,
                f"it is held by {row.lease_owner} (a live lease): it is running; migrate "
                "again once it waits",
            )
        try:
            data = self._context(rule, snapshot)
        except Exception as error:
            log.warning("migrating instance %s: the context was refused: %s", row.id, error)
            return entry("failed", fit.state, f"{type(error).__name__}: {error}")
        if dry_run:
            return entry("would move", fit.state)
        try:
            claimed = self.store.claim(
                row.id, row.version, self.leasing.owner, now + self.leasing.lease_ttl, now
            )
        except EntityBusy:
            return entry("skipped", fit.state, "it was claimed by an engine: it is running")
        except FencedOut:
            return entry("skipped", fit.state, "it moved on while migrating; migrate again")
        try:
            self._write(rule, claimed, snapshot, data)
        except Exception as error:
            due = due_when_let_go(
                Status(claimed.status), claimed.due_at, self.clock(), claimed.machine
            )
            self.store.release_lease(claimed.id, claimed.epoch, due)
            return entry("failed", fit.state, f"{type(error).__name__}: {error}")
        log.info(
            "moved instance %s of %s from version %d (%s) to %d (%s)",
            row.id,
            row.saga,
            rule.source.version,
            row.state,
            rule.target.version,
            fit.state,
        )
        return entry("moved", fit.state)

    def _context(self, rule: Migrator, snapshot: Snapshot) -> Any:
        """The new context, structured strictly into the new version's context type."""
        plan, target = rule.plan, rule.target
        if plan.context is None:
            value = converter.unstructure(snapshot.data, rule.source.context_type)
        else:
            value = plan.context(snapshot.data)
            if isinstance(value, target.context_type):
                value = converter.unstructure(value, target.context_type)
        return structure(value, target.context_type, what="the migrated context", saga=target.name)

    def _write(self, rule: Migrator, row: InstanceRow, snapshot: Snapshot, data: Any) -> None:
        now = self.clock()
        target = rule.target
        moved = rule.move(snapshot, data, now)
        new = moved.snapshot
        write = Write(
            state=new.state,
            status=new.status.value,
            context=encode(converter.unstructure(new.data, target.context_type)),
            machine=encode(machine_of(new, target)),
            error=None if new.error is None else encode(converter.unstructure(new.error)),
            output=None,
            attempt=new.attempt,
            due_at=moved.due_at,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        what = f"migrate v{rule.source.version} -> v{target.version}"
        if rule.plan.context_name is not None:
            what += f": {rule.plan.context_name}"
        history = HistoryRow(
            instance_id=row.id,
            version=row.version + 1,
            kind=moved.record.kind.value,
            transition=None,
            step=what,
            from_state=moved.record.from_state,
            to_state=moved.record.to_state,
            attempt=0,
            event=None,
            error=None,
            epoch=row.epoch,
            correlation_id=row.correlation_id,
            started_at=now,
            finished_at=now,
        )
        saga = (target.version, target.graph_hash)
        self.store.migrate(row.id, row.version, row.epoch, saga, write, [history])
