"""Reading runs: by id (with history and inbox), by entity key, and listed by filters."""

from __future__ import annotations

import attrs

from statesaga.core import Status, parent_of
from statesaga.errors import InstanceNotFound
from statesaga.run import HistoryEntry, Run
from statesaga.runtime.codec import entry_of, inbox_entry_of, run_of
from statesaga.runtime.registry import Registry
from statesaga.runtime.requests import SagaRef
from statesaga.store.base import HistoryRow, InstanceRow, Store

__all__ = ["Reads", "get_row"]


def get_row(store: Store, instance_id: str) -> InstanceRow:
    """The stored instance, or ``InstanceNotFound`` saying how to list them."""
    row = store.get(instance_id)
    if row is None:
        raise InstanceNotFound(
            f"no instance with id {instance_id!r}; list instances with `statesaga list`",
            instance_id=instance_id,
        )
    return row


class Reads:
    """Runs as the store keeps them, typed by the registered definitions."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    def run_of(self, row: InstanceRow, history: list[HistoryRow] | None = None) -> Run:
        """A stored instance as a ``Run`` (typed when its saga version is registered)."""
        return run_of(row, self.registry.get(row.saga, row.saga_version), history or [])

    def get(self, instance_id: str) -> Run:
        """The run with that id, with its history and its inbox."""
        row = get_row(self.store, instance_id)
        run = self.run_of(row, self.store.history(instance_id))
        inbox = tuple(inbox_entry_of(e) for e in self.store.inbox(instance_id))
        return attrs.evolve(run, inbox=inbox)

    def children(self, instance_id: str) -> list[Run]:
        """The child runs the run's child steps started, oldest first.

        Children share their parent's correlation id (an indexed read) and carry
        its id in their idempotency key.
        """
        row = get_row(self.store, instance_id)
        return [self.run_of(kin) for kin in reversed(self.child_rows(row.id, row.correlation_id))]

    def child_rows(self, instance_id: str, correlation_id: str) -> list[InstanceRow]:
        """The rows of the run's children, newest first (one indexed read)."""
        family = self.store.list(correlation_id=correlation_id, limit=10_000)
        return [
            kin
            for kin in family
            if (parent := parent_of(kin.idempotency_key)) is not None and parent[0] == instance_id
        ]

    def history(self, instance_id: str) -> list[HistoryEntry]:
        """The run's persisted transitions, oldest first."""
        get_row(self.store, instance_id)
        return [entry_of(h) for h in self.store.history(instance_id)]

    def list(
        self,
        *,
        saga: str | None = None,
        status: Status | str | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs matching every filter given, newest first (without their history)."""
        rows = self.store.list(
            saga=saga,
            status=None if status is None else Status(status).value,
            entity_key=key,
            correlation_id=correlation_id,
            since=since,
            until=until,
            limit=limit,
        )
        return [self.run_of(row) for row in rows]

    def find_id(self, instance_id: str | None, saga: SagaRef | None, key: str | None) -> str:
        """The id given, or that of the saga's open instance on ``key``."""
        if instance_id is not None:
            return instance_id
        if saga is None or key is None:
            raise InstanceNotFound("pass instance_id=..., or both saga=... and key=...")
        definition, _ = self.registry.resolve(saga)
        row = self.store.find(definition.name, entity_key=key)
        if row is None:
            raise InstanceNotFound(
                f"saga {definition.name!r} has no open instance on {key!r}",
                saga=definition.name,
                key=key,
            )
        return row.id
