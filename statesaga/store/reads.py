"""Reads and listings of the store (SQLAlchemy Core): instances, history, counts, pages.

Each is one short read on a pooled connection; :class:`~statesaga.store.sql.SqlStore`
offers them as its methods.

>>> from statesaga.store import SqlStore
>>> store = SqlStore("sqlite://")
>>> get(store.engine, "nope") is None, list_instances(store.engine, saga="demo")
(True, [])
"""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa

from statesaga.core import OPEN_STATUSES
from statesaga.store import claims as _claims
from statesaga.store.base import HistoryRow, InstanceRow
from statesaga.store.dialects import reading
from statesaga.store.schema import history, instances, metadata

__all__ = [
    "count_by_status",
    "due",
    "dump",
    "find",
    "get",
    "ids_starting_with",
    "instance",
    "list_instances",
    "list_page",
    "read_history",
]


def get(engine: sa.Engine, instance_id: str) -> InstanceRow | None:
    """The instance with that id, or ``None``."""
    with reading(engine) as connection:
        row = connection.execute(
            sa.select(instances).where(instances.c.id == instance_id)
        ).one_or_none()
    return None if row is None else instance(row)


def find(
    engine: sa.Engine,
    saga: str,
    *,
    entity_key: str | None = None,
    idempotency_key: str | None = None,
) -> InstanceRow | None:
    """The open instance on ``entity_key``, or the instance with ``idempotency_key``."""
    query = sa.select(instances).where(instances.c.saga == saga)
    if idempotency_key is not None:
        query = query.where(instances.c.idempotency_key == idempotency_key)
    elif entity_key is not None:
        query = query.where(
            instances.c.entity_key == entity_key, instances.c.status.in_(OPEN_STATUSES)
        )
    else:
        return None
    with reading(engine) as connection:
        row = connection.execute(query).first()
    return None if row is None else instance(row)


def _filtered(
    saga: str | None,
    status: str | None,
    entity_key: str | None,
    correlation_id: str | None,
    since: float | None,
    until: float | None,
) -> sa.Select[Any]:
    query = sa.select(instances)
    for column, value in (
        (instances.c.saga, saga),
        (instances.c.status, status),
        (instances.c.entity_key, entity_key),
        (instances.c.correlation_id, correlation_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(instances.c.created_at >= since)
    if until is not None:
        query = query.where(instances.c.created_at < until)
    return query


def list_instances(
    engine: sa.Engine,
    *,
    saga: str | None = None,
    status: str | None = None,
    entity_key: str | None = None,
    correlation_id: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> builtins.list[InstanceRow]:
    """Instances matching every filter given, newest first (see ``SqlStore.list``)."""
    query = _filtered(saga, status, entity_key, correlation_id, since, until)
    query = query.order_by(instances.c.created_at.desc(), instances.c.id).limit(limit)
    with reading(engine) as connection:
        return [instance(row) for row in connection.execute(query)]


def list_page(
    engine: sa.Engine,
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
    """One page of :func:`list_instances`, keyset-paged (see ``SqlStore.list_page``)."""
    query = _filtered(saga, status, entity_key, correlation_id, since, until)
    if before is not None:
        created_at, instance_id = before
        query = query.where(
            sa.or_(
                instances.c.created_at < created_at,
                sa.and_(instances.c.created_at == created_at, instances.c.id < instance_id),
            )
        )
    query = query.order_by(instances.c.created_at.desc(), instances.c.id.desc()).limit(limit)
    with reading(engine) as connection:
        return [instance(row) for row in connection.execute(query)]


def count_by_status(engine: sa.Engine, saga: str | None = None) -> dict[tuple[str, int, str], int]:
    """How many instances there are per (saga, version, status), for one saga or all."""
    query = sa.select(
        instances.c.saga, instances.c.saga_version, instances.c.status, sa.func.count()
    ).group_by(instances.c.saga, instances.c.saga_version, instances.c.status)
    if saga is not None:
        query = query.where(instances.c.saga == saga)
    with reading(engine) as connection:
        return {
            (name, int(version), status): int(count)
            for name, version, status, count in connection.execute(query)
        }


def read_history(engine: sa.Engine, instance_id: str) -> builtins.list[HistoryRow]:
    """The instance's history, oldest first."""
    query = sa.select(history).where(history.c.instance_id == instance_id).order_by(history.c.id)
    with reading(engine) as connection:
        return [HistoryRow(**row._asdict()) for row in connection.execute(query)]


def ids_starting_with(engine: sa.Engine, prefix: str, limit: int = 10) -> builtins.list[str]:
    """Up to ``limit`` instance ids that start with ``prefix``, sorted (for id prefixes)."""
    query = (
        sa.select(instances.c.id)
        .where(instances.c.id.startswith(prefix, autoescape=True))
        .order_by(instances.c.id)
        .limit(limit)
    )
    with reading(engine) as connection:
        return [str(value) for value in connection.execute(query).scalars()]


def due(engine: sa.Engine, now: float, limit: int) -> builtins.list[InstanceRow]:
    """Instances that need work now and nobody holds, earliest due first.

    Every run that is not terminal has a live lease or a due time (the
    liveness invariant): so these are the runs whose holder's lease expired
    (a crash, a lost connection), the released runs whose due time passed
    (a retry's backoff, a wait's timeout, the deadline, a busy lock), and
    the released runs with events or cancels pending in their inbox. Each
    kind is read through its own partial index (see ``store.claims``).
    """
    picked = _claims.due_ids(now, limit).subquery("picked")
    query = (
        sa.select(instances)
        .join(picked, picked.c.id == instances.c.id)
        .order_by(picked.c.since, instances.c.id)
    )
    with reading(engine) as connection:
        return [instance(row) for row in connection.execute(query)]


def dump(engine: sa.Engine) -> dict[str, builtins.list[tuple[Any, ...]]]:
    """Every row of every table, ordered, for tests that compare before and after."""
    result: dict[str, builtins.list[tuple[Any, ...]]] = {}
    with reading(engine) as connection:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns)
            rows = connection.execute(sa.select(table).order_by(*order))
            result[table.name] = [tuple(row) for row in rows]
    return result


def instance(row: sa.Row[Any]) -> InstanceRow:
    """An instance row as the store hands it out."""
    return InstanceRow(**row._asdict())
