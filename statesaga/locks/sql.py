"""Leases in the store's own database (table ``statesaga_locks``): across processes, no server.

Each operation is one short transaction of one statement: acquiring is an
upsert that only overwrites an expired lease; renewing and releasing match on
the lease's token, so a holder that lost its lease cannot touch the new one.
The lease keeper renews many at once (``renew_many``): one statement per
``RENEW_BATCH`` leases, matched on (key, token) alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from statesaga.locks.base import Lease
from statesaga.store.claims import renewal_batches
from statesaga.store.schema import locks as locks_table
from statesaga.store.sql import SqlStore

__all__ = ["SqlLocks"]


class SqlLocks:
    """Entity leases in the ``statesaga_locks`` table of a :class:`SqlStore`'s database.

    >>> from statesaga.store import SqlStore
    >>> locks = SqlLocks(SqlStore("sqlite://"))
    >>> lease = locks.try_acquire("cart:1", "worker-a", ttl=30, now=100.0)
    >>> locks.try_acquire("cart:1", "worker-b", ttl=30, now=101.0) is None
    True
    >>> locks.try_acquire("cart:1", "worker-b", ttl=30, now=131.0).owner  # expired: taken over
    'worker-b'
    >>> locks.renew(lease, ttl=30, now=132.0) is None  # the first holder lost it
    True
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
        self._acquire_sql = (
            "INSERT INTO statesaga_locks (key, owner, token, expires_at) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}) "
            "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
            f"expires_at = excluded.expires_at WHERE statesaga_locks.expires_at <= {mark}"
        )
        self._renew_sql = (
            f"UPDATE statesaga_locks SET expires_at = {mark} WHERE key = {mark} AND token = {mark}"
        )
        self._release_sql = f"DELETE FROM statesaga_locks WHERE key = {mark} AND token = {mark}"

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        return self.store.execute_raw(sql, params)

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        token = uuid.uuid4().hex
        if self._execute(self._acquire_sql, (key, owner, token, now + ttl, now)) == 1:
            return Lease(key, owner, token, now + ttl)
        return None

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        if self._execute(self._renew_sql, (now + ttl, lease.key, lease.token)) == 1:
            return Lease(lease.key, lease.owner, lease.token, now + ttl)
        return None

    def renew_many(self, leases: Sequence[Lease], ttl: float, now: float) -> list[Lease | None]:
        """Each lease renewed, or ``None`` where it was lost: one statement per batch.

        >>> from statesaga.store import SqlStore
        >>> locks = SqlLocks(SqlStore("sqlite://"))
        >>> a = locks.try_acquire("cart:1", "me", ttl=30, now=100.0)
        >>> b = locks.try_acquire("cart:2", "me", ttl=30, now=100.0)
        >>> [lease and lease.expires_at for lease in locks.renew_many([a, b], 30, now=110.0)]
        [140.0, 140.0]
        """
        if not leases:
            return []
        c = locks_table.c
        pairs = [(lease.key, lease.token) for lease in leases]
        kept: set[tuple[str, str]] = set()
        with self.store.engine.begin() as connection:
            for batch in renewal_batches(pairs):
                statement = (
                    sa.update(locks_table)
                    .where(sa.tuple_(c.key, c.token).in_(list(batch)))
                    .values(expires_at=now + ttl)
                    .returning(c.key, c.token)
                )
                kept.update((row.key, row.token) for row in connection.execute(statement))
        return [
            Lease(lease.key, lease.owner, lease.token, now + ttl)
            if (lease.key, lease.token) in kept
            else None
            for lease in leases
        ]

    def release(self, lease: Lease) -> None:
        self._execute(self._release_sql, (lease.key, lease.token))
