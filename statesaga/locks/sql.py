"""Leases in the store's own database (table ``statesaga_locks``): across processes, no server.

Each operation is one short transaction of one statement: acquiring is an
upsert that only overwrites an expired lease; renewing and releasing match on
the lease's token, so a holder that lost its lease cannot touch the new one.
"""

from __future__ import annotations

import uuid
from typing import Any

from statesaga.locks.base import Lease
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

    def release(self, lease: Lease) -> None:
        self._execute(self._release_sql, (lease.key, lease.token))
