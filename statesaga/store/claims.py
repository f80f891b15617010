"""What claims and lease renewals send: queries that read only the runs that need work.

A run needs work when its holder's lease expired, when it is released and
its due time passed, or when it is released with events waiting in its
inbox. One ``OR`` of the three makes the database read every run ever
stored (finished ones included) and sort whatever matches; so each kind is
its own part, which its partial index answers in order
(``ix_statesaga_leased``, ``ix_statesaga_due``, ``ix_statesaga_inbox_pending``),
each part stops at ``limit`` rows, and only those few are merged, sorted by
when they became due, and claimed. A claim then costs the same with 100 or
100,000 runs due, and an idle poll reads three empty index ranges.

On PostgreSQL each part locks its rows ``FOR UPDATE SKIP LOCKED`` (in a CTE,
as a ``UNION`` may not lock), so workers claim disjoint batches.

>>> import sqlalchemy as sa
>>> from sqlalchemy.dialects import sqlite
>>> print(due_ids(100.0, 10).compile(dialect=sqlite.dialect()))  # doctest: +ELLIPSIS
WITH expired AS...ORDER BY statesaga_instances.lease_expires_at...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from statesaga.store.schema import INBOX_PENDING, inbox, instances

__all__ = [
    "PG_RENEW_SQL",
    "RENEW_BATCH",
    "claim_statement",
    "due_ids",
    "renew_statement",
    "renewal_batches",
]

_Pair = TypeVar("_Pair", bound=tuple[Any, ...])

#: (id, epoch) pairs per renewal statement where the dialect has no arrays: 2 parameters
#: each, well under SQLite's 32,766 and PostgreSQL's 65,535 per statement
RENEW_BATCH = 5000


def _parts(
    now: float, limit: int, sagas: Sequence[tuple[str, int]] | None, lock: bool
) -> list[sa.CTE]:
    c = instances.c
    # a released run's lease expiry, if set, is when it may be claimed again (its entity
    # was busy when it was last tried)
    free = sa.or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now)
    parts = [
        # a holder's lease expired (a crash, a lost connection): oldest expiry first
        sa.select(c.id, c.lease_expires_at.label("since"))
        .where(c.lease_owner.is_not(None), c.lease_expires_at < now)
        .order_by(c.lease_expires_at),
        # released and due (a retry's backoff, a wait's timeout, the deadline, a busy lock)
        sa.select(c.id, c.due_at.label("since"))
        .where(c.lease_owner.is_(None), c.due_at.is_not(None), c.due_at <= now, free)
        .order_by(c.due_at),
        # released with events or cancels pending (received while it was held)
        sa.select(c.id, c.updated_at.label("since"))
        .where(
            c.lease_owner.is_(None),
            free,
            c.id.in_(sa.select(inbox.c.instance_id).where(inbox.c.status == INBOX_PENDING)),
        )
        .order_by(c.updated_at),
    ]
    ctes = []
    for name, part in zip(("expired", "released", "signalled"), parts, strict=True):
        if sagas is not None:
            part = part.where(sa.tuple_(c.saga, c.saga_version).in_(list(sagas)))
        part = part.limit(limit)
        if lock:
            part = part.with_for_update(skip_locked=True)
        ctes.append(part.cte(name))
    return ctes


def due_ids(
    now: float,
    limit: int,
    sagas: Sequence[tuple[str, int]] | None = None,
    *,
    lock: bool = False,
) -> sa.Select[Any]:
    """Up to ``limit`` ids of runs that need work now (``id``, ``since``), earliest due first.

    A run in two parts (due, and an event waiting) counts once.
    """
    merged = sa.union_all(
        *(sa.select(cte.c.id, cte.c.since) for cte in _parts(now, limit, sagas, lock))
    ).subquery("due")
    since = sa.func.min(merged.c.since).label("since")
    return (
        sa.select(merged.c.id, since)
        .group_by(merged.c.id)
        .order_by(since, merged.c.id)
        .limit(limit)
    )


def claim_statement(
    now: float,
    limit: int,
    owner: str,
    expires_at: float,
    sagas: Sequence[tuple[str, int]] | None,
    *,
    lock: bool,
) -> sa.Update:
    """Claim what :func:`due_ids` finds in one statement: lease taken, epoch bumped."""
    picked = due_ids(now, limit, sagas, lock=lock).subquery("picked")
    # spelled out: in RETURNING a bare "id" would be the inbox's own column
    claimed_id: sa.ColumnClause[str] = sa.literal_column(f"{instances.name}.id")
    entry = inbox.alias("entry")
    pending = (
        sa.select(entry.c.id)
        .where(entry.c.instance_id == claimed_id, entry.c.status == INBOX_PENDING)
        .exists()
        .label("inbox_pending")
    )
    return (
        sa.update(instances)
        .where(instances.c.id.in_(sa.select(picked.c.id)))
        .values(
            epoch=instances.c.epoch + 1,
            version=instances.c.version + 1,
            lease_owner=owner,
            lease_expires_at=expires_at,
            updated_at=now,
        )
        .returning(instances, pending)
    )


def renewal_batches(leases: Sequence[_Pair], size: int = RENEW_BATCH) -> Iterator[Sequence[_Pair]]:
    """``leases`` in slices of at most ``size`` pairs (one statement each)."""
    for start in range(0, len(leases), size):
        yield leases[start : start + size]


def renew_statement(leases: Sequence[tuple[str, int]], expires_at: float) -> sa.Update:
    """Push out every lease in ``leases`` whose (id, epoch) still matches; returns their ids."""
    c = instances.c
    return (
        sa.update(instances)
        .where(sa.tuple_(c.id, c.epoch).in_(list(leases)))
        .values(lease_expires_at=expires_at)
        .returning(c.id)
    )


PG_RENEW_SQL = (
    "UPDATE statesaga_instances AS i SET lease_expires_at = %s "
    "FROM unnest(%s::text[], %s::integer[]) AS lease(id, epoch) "
    "WHERE i.id = lease.id AND i.epoch = lease.epoch RETURNING i.id"
)
"""PostgreSQL (psycopg): every pair in two array parameters, one statement however many."""
