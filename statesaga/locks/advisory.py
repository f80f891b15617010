"""Entity leases as PostgreSQL advisory locks, held by a session of their own.

Each held lease keeps one database connection that holds a session-level
``pg_try_advisory_lock`` on a 64-bit hash of the entity key. Advisory locks do
not expire by time: one ends when it is released, or when the session that
holds it ends. A crashed process's locks vanish with its connections, as soon
as PostgreSQL notices the connection is gone (at once for a killed process;
after TCP keepalive for a vanished machine). The ``ttl`` and the returned
``expires_at`` are kept for the engine's bookkeeping only.

Use them where the store is PostgreSQL and no Redis is wanted: no table
writes, no lock rows to clean up. Each lease in flight costs a connection, so
size ``max_connections`` for the runs held at once, and connect directly or
through a session-pooling PgBouncer (transaction pooling breaks session
locks). The store's guards (one open instance per entity key, the epoch
compare-and-set on every transition) stay the correctness backstop.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from typing import Any

import attrs

from statesaga.errors import LocksUnavailable, StateSagaError
from statesaga.locks.base import Lease
from statesaga.store.sql import SqlStore

__all__ = ["AdvisoryLocks"]

_LOCK_SQL = "SELECT pg_try_advisory_lock(%s::bigint)"
_UNLOCK_SQL = "SELECT pg_advisory_unlock(%s::bigint)"
# a bigint advisory key shows in pg_locks as (classid, objid): its high and low halves
_HELD_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND objsubid = 1 "
    "AND ((classid::bigint << 32) | objid::bigint) = %s::bigint)"
)


@attrs.define(eq=False)
class _Held:
    """The session holding one lease; its mutex keeps renew and release apart."""

    connection: Any
    lock_id: int
    mutex: threading.Lock = attrs.Factory(threading.Lock)
    released: bool = False


class AdvisoryLocks:
    """Entity leases as PostgreSQL session advisory locks in a :class:`SqlStore`'s database.

    Args:
        store: a store on PostgreSQL; its engine opens the locks' connections.
        namespace: mixed into each key's hash, so that other users of advisory
            locks in the same database (and other namespaces) stay apart.
        max_idle: connections kept open between leases, for reuse.

    Raises:
        StateSagaError: the store is not PostgreSQL.

    >>> from statesaga.store import SqlStore
    >>> AdvisoryLocks(SqlStore("sqlite://"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    statesaga.errors.StateSagaError: AdvisoryLocks need a PostgreSQL store, not sqlite ...
    """

    def __init__(
        self, store: SqlStore, *, namespace: str = "statesaga:lock:", max_idle: int = 4
    ) -> None:
        dialect = store.engine.dialect.name
        if dialect != "postgresql":
            raise StateSagaError(
                f"AdvisoryLocks need a PostgreSQL store, not {dialect} "
                f"({store.engine.url.render_as_string(hide_password=True)}); use SqlLocks "
                "(leases in the store's own tables) or RedisLocks instead"
            )
        self.store = store
        self.namespace = namespace
        self.max_idle = max_idle
        self._idle: list[Any] = []
        self._held: dict[str, _Held] = {}
        self._mutex = threading.Lock()

    def lock_id(self, key: str) -> int:
        """The signed 64-bit advisory lock id of entity ``key`` (as ``pg_locks`` shows it)."""
        digest = hashlib.blake2b((self.namespace + key).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        """Take the lock on ``key`` on a connection of its own, or ``None`` if a session holds it.

        Raises:
            LocksUnavailable: PostgreSQL cannot be reached.
        """
        lock_id = self.lock_id(key)
        connection, got = self._lock(lock_id, key)
        if not got:
            self._checkin(connection)
            return None
        lease = Lease(key, owner, uuid.uuid4().hex, now + ttl)
        with self._mutex:
            self._held[lease.token] = _Held(connection, lock_id)
        return lease

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        """Check that the lease's session still holds its lock; ``None`` if it does not."""
        with self._mutex:
            held = self._held.get(lease.token)
        if held is None:
            return None
        with held.mutex:
            if held.released:
                return None
            try:
                still = bool(_fetch(held.connection, _HELD_SQL, held.lock_id))
            except Exception:
                still = False  # the session is gone, and its advisory locks went with it
            if not still:
                self._forget(lease.token, held)
                _close(held.connection)
                return None
        return Lease(lease.key, lease.owner, lease.token, now + ttl)

    def release(self, lease: Lease) -> None:
        """Unlock and keep the connection for reuse; no error if the lease was already lost."""
        with self._mutex:
            held = self._held.pop(lease.token, None)
        if held is None:
            return
        with held.mutex:
            held.released = True
            try:
                _fetch(held.connection, _UNLOCK_SQL, held.lock_id)
            except Exception:  # a dead session holds nothing; let the connection go
                _close(held.connection)
                return
        self._checkin(held.connection)

    def close(self) -> None:
        """Close every connection, idle or holding a lock (which ends those locks)."""
        with self._mutex:
            connections = [held.connection for held in self._held.values()] + self._idle
            self._held, self._idle = {}, []
        for connection in connections:
            _close(connection)

    # -- connections -------------------------------------------------------------------------

    def _lock(self, lock_id: int, key: str) -> tuple[Any, bool]:
        """Try the lock on a connection (an idle one, else a new one); return both."""
        with self._mutex:
            connection = self._idle.pop() if self._idle else None
        if connection is not None:
            try:
                return connection, bool(_fetch(connection, _LOCK_SQL, lock_id))
            except Exception:  # gone stale while idle (a server restart, say): use a new one
                _close(connection)
                connection = None
        try:
            connection = self._connect()
            return connection, bool(_fetch(connection, _LOCK_SQL, lock_id))
        except Exception as error:
            if connection is not None:
                _close(connection)
            url = self.store.engine.url.render_as_string(hide_password=True)
            raise LocksUnavailable(
                f"cannot take the advisory lock on {key!r}: PostgreSQL at {url} is unavailable "
                f"({error}); check that the database runs and accepts connections",
                key=key,
            ) from error

    def _connect(self) -> Any:
        # detached from the store's pool: a lock may be held for as long as a run works
        fairy = self.store.engine.raw_connection()
        fairy.detach()
        connection: Any = fairy.dbapi_connection
        connection.rollback()
        # no transaction stays open while the lock is held
        connection.autocommit = True
        return connection

    def _checkin(self, connection: Any) -> None:
        with self._mutex:
            if len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        _close(connection)

    def _forget(self, token: str, held: _Held) -> None:
        with self._mutex:
            if self._held.get(token) is held:
                del self._held[token]
        held.released = True


def _fetch(connection: Any, sql: str, lock_id: int) -> Any:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, (lock_id,))
        return cursor.fetchone()[0]
    finally:
        cursor.close()


def _close(connection: Any) -> None:
    # closing a broken connection may fail; it is gone either way
    with contextlib.suppress(Exception):
        connection.close()
