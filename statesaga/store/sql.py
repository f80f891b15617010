"""``SqlStore``: the store over SQLAlchemy, SQLite first (the embedded default).

The store composes small rooms, each chosen or built once when it opens:

- :mod:`~statesaga.store.dialects`: what differs per database (SQLite,
  psycopg, generic): how a write transaction begins and commits, which
  unique constraint a failed insert violated, how claims lock and leases renew;
- :mod:`~statesaga.store.writes`: the transition hot path, hand-written
  statements on the raw DBAPI connection (one statement per transition on
  PostgreSQL), on the connections of :mod:`~statesaga.store.hot`;
- :mod:`~statesaga.store.reads`, :mod:`~statesaga.store.leases` and
  :mod:`~statesaga.store.inbox`: reads and listings, claims and leases, the
  inbox, through SQLAlchemy Core as usual.

>>> store = SqlStore("sqlite://")  # an in-memory database, migrated on open
>>> store.get("nope") is None
True
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from statesaga.errors import StoreBusy, StoreError
from statesaga.serde import dumps, loads
from statesaga.store import inbox as _inbox
from statesaga.store import leases as _leases
from statesaga.store import reads as _reads
from statesaga.store.base import HistoryRow, InboxRow, InstanceRow, Settle, Write
from statesaga.store.dialects import APP_SCHEMAS, dialect_for, reading, use_schema
from statesaga.store.hooks import StoreWrite, WriteHook
from statesaga.store.hot import HotConnections
from statesaga.store.migrate import ensure_schema
from statesaga.store.pool import FairQueuePool
from statesaga.store.writes import HotWrites, connection_lost

__all__ = ["SqlStore"]

# `statesaga db upgrade --schema` sets a schema up on its own engine the same way
_use_schema = use_schema


class SqlStore:
    """Instances and history in a SQL database through SQLAlchemy.

    Args:
        url: a SQLAlchemy URL (``sqlite:///statesaga.db``) or an ``Engine``.
        auto_migrate: apply the alembic migrations on open. Default: on for
            SQLite, off elsewhere (run ``statesaga db upgrade``).
        sqlite_synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (the
            default) in WAL mode survives a process crash at any point; ``FULL``
            also survives power loss, at the cost of an fsync per commit.
        busy_timeout: seconds a SQLite writer waits for the write lock.
        schema: PostgreSQL only: the schema holding the store's tables.
        app_schemas: PostgreSQL with ``schema`` only: the schemas that follow
            the store's on every connection's ``search_path`` (default
            ``("public",)``), where a transactional step's ``ctx.connection``
            finds the application's tables by their plain names.
        pool_size, max_overflow: SQLAlchemy's pool (reads, claims, transactional
            steps) on PostgreSQL and SQLite files: ``pool_size`` kept open,
            ``max_overflow`` more at busy times. Threads beyond them wait their
            turn, served in order: a few connections per core keep a process
            busiest (more add contention, not throughput); raise them for a
            database with a long round trip.
        hot_connections: the transition hot path's own connections, at most this
            many. A process holds at most ``pool_size + max_overflow +
            hot_connections`` connections to the database (10 by default).
        hook: called before each start or transition is written, before it
            commits and once it committed: the seam crash and fault tests act
            through (:mod:`statesaga.store.hooks`). Also settable as ``store.hook``.
    """

    def __init__(
        self,
        url: str | sa.Engine,
        *,
        auto_migrate: bool | None = None,
        sqlite_synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
        schema: str | None = None,
        app_schemas: Sequence[str] = APP_SCHEMAS,
        pool_size: int = 5,
        max_overflow: int = 0,
        hot_connections: int = 5,
        hook: WriteHook | None = None,
    ) -> None:
        self.engine = (
            url if isinstance(url, sa.Engine) else _create_engine(url, pool_size, max_overflow)
        )
        self.schema = schema
        self.dialect = dialect_for(self.engine)
        self.dialect.configure(
            schema=schema,
            synchronous=sqlite_synchronous,
            busy_timeout=busy_timeout,
            app_schemas=app_schemas,
        )
        self._hot = HotConnections(
            self.engine,
            size=hot_connections,
            prepare=self.dialect.prepare_hot,
            returned=self.dialect.returned,
        )
        self._writes = HotWrites(self.engine, self.dialect, self._hot)
        self.hook = hook
        if auto_migrate is None:
            auto_migrate = self.is_sqlite
        ensure_schema(self.engine, upgrade=auto_migrate, schema=schema)

    @property
    def hook(self) -> WriteHook | None:
        """The :data:`~statesaga.store.hooks.WriteHook` every write calls, or ``None``."""
        return self._writes.hook

    @hook.setter
    def hook(self, hook: WriteHook | None) -> None:
        self._writes.hook = hook

    @property
    def is_sqlite(self) -> bool:
        """The database is SQLite (the embedded default)."""
        return self.engine.dialect.name == "sqlite"

    # -- the hot path (see store.writes) ----------------------------------------------------

    def insert(
        self,
        row: InstanceRow,
        history_rows: Sequence[HistoryRow],
        connection: Any = None,
        write: Write | None = None,
    ) -> None:
        """Insert a new instance and its first history rows in one transaction.

        With ``connection`` (from :meth:`transaction`), the rows are written in
        that transaction and commit with it; ``write`` then gives the values of
        the run's first transition, recorded in the same rows (see
        :meth:`Store.insert`).

        Raises:
            DuplicateStart: the idempotency key is taken.
            EntityBusy: the saga already has an open instance on the entity key.
        """
        self._writes.insert(row, history_rows, connection, write)

    def transition(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        write: Write,
        history_rows: Sequence[HistoryRow],
        connection: Any = None,
        settle: Sequence[Settle] = (),
    ) -> None:
        """Compare-and-set the instance on (version, epoch) and append its history rows.

        With ``connection`` (from :meth:`transaction`), the writes join that
        transaction and commit with it; otherwise they commit at once.
        ``settle`` marks inbox entries consumed in the same transaction.
        """
        self._writes.transition(
            instance_id, version, epoch, write, history_rows, connection, settle
        )

    def migrate(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        saga: tuple[int, str],
        write: Write,
        history_rows: Sequence[HistoryRow],
    ) -> None:
        """Move a claimed instance onto another version of its saga, in one transaction.

        ``saga`` is the (saga version, graph hash) it moves to; the rest is a
        transition's compare-and-set on (version, epoch) and its history rows.
        """
        self._writes.migrate(instance_id, version, epoch, saga, write, history_rows)

    def execute_raw(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement in its own transaction on a hot-path connection.

        Returns the number of rows it touched.
        """
        return self._writes.execute(sql, params)

    # -- transactions for transactional steps --------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A SQLAlchemy connection inside a transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        joined: builtins.list[StoreWrite] = []  # what a hook saw join it
        try:
            with (
                self.engine.connect() as connection,
                connection.begin(),
                self._writes.joining(connection, joined),
            ):
                yield connection
        except sa.exc.DBAPIError as error:  # its COMMIT failed
            if not error.connection_invalidated:
                raise
            raise connection_lost(error.orig) from error
        if joined:
            self._writes.committed(joined)

    def reading(self) -> sa.Connection:
        """A connection for the application's own reads on the store's database.

        On SQLite a plain ``engine.connect()`` begins with ``BEGIN IMMEDIATE`` (the
        write lock, so that two writers never deadlock), and a read then waits its
        turn behind every writer; this connection's transaction takes no write lock
        and, under WAL, never waits for a writer. On PostgreSQL it is an ordinary
        connection. Use it as a context manager; write through ``engine.begin()``.

        >>> from statesaga.store import SqlStore
        >>> store = SqlStore("sqlite://")
        >>> with store.reading() as connection:
        ...     connection.exec_driver_sql("SELECT count(*) FROM statesaga_instances").scalar()
        0
        >>> store.close()
        """
        return reading(self.engine)

    # -- claims and leases (see store.leases) ---------------------------------------------

    def claim(
        self, instance_id: str, version: int, owner: str, expires_at: float, now: float
    ) -> InstanceRow:
        """Take the instance's lease and bump its epoch; the row as it now is."""
        return _leases.claim(self.engine, instance_id, version, owner, expires_at, now)

    def extend_lease(self, instance_id: str, epoch: int, expires_at: float) -> bool:
        """Push the lease out, unless the epoch moved on (another holder claimed it)."""
        return _leases.extend_lease(self.engine, instance_id, epoch, expires_at)

    def extend_leases(self, leases: Sequence[tuple[str, int]], expires_at: float) -> set[str]:
        """Push out many leases at once; the ids whose epoch still matched.

        One statement for every (id, epoch) pair on PostgreSQL (two array
        parameters), slices of ``claims.RENEW_BATCH`` pairs elsewhere, all in
        one transaction. An id missing from the answer lost its claim (another
        holder bumped the epoch) or is gone.

        On PostgreSQL the statement goes through the hot path's connections,
        which no thread holds for longer than a write: renewals never queue
        behind transactional steps that hold every pooled connection.
        """
        hot = self.dialect.hot_renewal(leases, expires_at) if leases else None
        if hot is not None:
            return {str(value) for value in self._writes.returning(*hot)}
        return _leases.extend_leases(self.engine, self.dialect, leases, expires_at)

    def release_lease(self, instance_id: str, epoch: int, due_at: float | None) -> bool:
        """Let the lease go without a transition (due at ``due_at``), unless fenced out."""
        return _leases.release_lease(self.engine, instance_id, epoch, due_at)

    def claim_due(
        self,
        now: float,
        limit: int,
        owner: str,
        expires_at: float,
        sagas: Sequence[tuple[str, int]] | None = None,
    ) -> builtins.list[InstanceRow]:
        """Claim up to ``limit`` instances that need work now, in one statement.

        Each claim bumps the instance's epoch. On PostgreSQL the candidates are
        locked with ``FOR UPDATE SKIP LOCKED``, so many workers claim disjoint
        batches without waiting on each other; SQLite's write lock serialises
        them. ``sagas`` limits the claim to the (name, version) pairs a worker
        can drive. The cost does not grow with the backlog or with the runs
        already finished: only the first ``limit`` entries of each partial
        index are read.
        """
        return _leases.claim_due(self.engine, self.dialect, now, limit, owner, expires_at, sagas)

    # -- reads (see store.reads) -----------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRow | None:
        """The instance with that id, or ``None``."""
        return _reads.get(self.engine, instance_id)

    def find(
        self, saga: str, *, entity_key: str | None = None, idempotency_key: str | None = None
    ) -> InstanceRow | None:
        """The open instance on ``entity_key``, or the instance with ``idempotency_key``."""
        return _reads.find(
            self.engine, saga, entity_key=entity_key, idempotency_key=idempotency_key
        )

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
        """Instances matching every filter given, newest first.

        ``since`` and ``until`` (epoch seconds) bound when they were started.
        """
        return _reads.list_instances(
            self.engine,
            saga=saga,
            status=status,
            entity_key=entity_key,
            correlation_id=correlation_id,
            since=since,
            until=until,
            limit=limit,
        )

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
        """One page of :meth:`list`, newest first by (``created_at``, ``id``).

        ``before`` is the (``created_at``, ``id``) of the last row of the previous
        page (a keyset cursor): the page starts right after it, so runs started
        meanwhile neither shift the pages nor show up twice.
        """
        return _reads.list_page(
            self.engine,
            saga=saga,
            status=status,
            entity_key=entity_key,
            correlation_id=correlation_id,
            since=since,
            until=until,
            before=before,
            limit=limit,
        )

    def count_by_status(self, saga: str | None = None) -> dict[tuple[str, int, str], int]:
        """How many instances there are per (saga, version, status), for one saga or all."""
        return _reads.count_by_status(self.engine, saga)

    def history(self, instance_id: str) -> builtins.list[HistoryRow]:
        """The instance's history, oldest first."""
        return _reads.read_history(self.engine, instance_id)

    def ids_starting_with(self, prefix: str, limit: int = 10) -> builtins.list[str]:
        """Up to ``limit`` instance ids that start with ``prefix``, sorted (for id prefixes)."""
        return _reads.ids_starting_with(self.engine, prefix, limit)

    def due(self, now: float, limit: int) -> builtins.list[InstanceRow]:
        """Instances that need work now and nobody holds (see :meth:`claim_due`)."""
        return _reads.due(self.engine, now, limit)

    def dump(self) -> dict[str, builtins.list[tuple[Any, ...]]]:
        """Every row of every table, ordered, for tests that compare before and after."""
        return _reads.dump(self.engine)

    # -- the inbox (see store.inbox) -------------------------------------------------------

    def receive(self, entry: InboxRow) -> tuple[InboxRow, bool]:
        """Record an event or cancel; a duplicate event id returns the stored entry.

        Raises:
            StoreBusy: the database stayed locked past its busy timeout (SQLite);
                nothing was recorded, and sending again is safe.
        """
        try:
            return _inbox.receive(self.engine, entry)
        except StoreBusy as error:  # (the engine's handler turns SQLite's busy into it)
            raise StoreBusy(
                f"the database stayed busy past its busy timeout while recording "
                f"{entry.kind} {entry.event_id!r} for run {entry.instance_id}; nothing was "
                "recorded: send it again (the event id makes a repeat safe), or raise the "
                "store's busy_timeout",
                instance_id=entry.instance_id,
            ) from error

    def pending(
        self, instance_id: str, connection: sa.Connection | None = None
    ) -> builtins.list[InboxRow]:
        """The run's inbox entries still to consume, oldest first.

        With ``connection`` (a transactional step's), read in that transaction: a
        step's transaction never waits for a second pooled connection.
        """
        return _inbox.read_inbox(self.engine, instance_id, only_pending=True, connection=connection)

    def inbox(self, instance_id: str) -> builtins.list[InboxRow]:
        """Every inbox entry of the run, oldest first."""
        return _inbox.read_inbox(self.engine, instance_id)

    def inbox_entry(self, instance_id: str, event_id: str) -> InboxRow | None:
        """One inbox entry, by its event id."""
        return _inbox.read_entry(self.engine, instance_id, event_id)

    def close(self) -> None:
        """Close the hot-path connections and dispose of the connection pool."""
        self._hot.close()
        self.engine.dispose()


def _create_engine(url: str, pool_size: int, max_overflow: int) -> sa.Engine:
    # JSON columns written through SQLAlchemy are encoded as the hot path encodes them
    codec = {"json_serializer": dumps, "json_deserializer": loads}
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            # one shared in-memory database for every thread, not one per thread
            return sa.create_engine(
                url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False}, **codec
            )
        if parsed.get_backend_name() == "postgresql":
            # a sensible pool for many threads; dead connections are replaced, not reused
            return sa.create_engine(
                url,
                poolclass=FairQueuePool,  # threads waiting for a connection, served in order
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                **codec,
            )
        if parsed.get_backend_name() == "sqlite":
            return sa.create_engine(
                url,
                poolclass=FairQueuePool,
                pool_size=pool_size,
                max_overflow=max_overflow,
                **codec,
            )
        return sa.create_engine(url, **codec)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
        raise StoreError(
            f"cannot open a store at {url!r}: {error}; use a SQLAlchemy URL such as "
            "sqlite:///statesaga.db or postgresql+psycopg://user@host/db"
        ) from error
