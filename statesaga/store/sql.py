"""``SqlStore``: the store over SQLAlchemy, SQLite first (the embedded default).

The transition hot path (insert a new instance, compare-and-set a transition)
runs hand-written statements straight on the DBAPI connection SQLAlchemy
holds: SQLAlchemy's per-statement overhead would otherwise dominate a
SQLite commit. On PostgreSQL (psycopg 3) that connection autocommits, and a
transition with one history row is a single statement, one round trip
instead of four (``BEGIN``, UPDATE, INSERT, ``COMMIT``)::

    WITH moved AS (UPDATE statesaga_instances SET ... WHERE id = %s
                   AND version = %s AND epoch = %s RETURNING id)
    INSERT INTO statesaga_history (...) SELECT ... FROM moved

A statement is a transaction of its own: the compare-and-set and the history
row commit together or not at all, and a fenced-out holder's statement
inserts nothing (row count 0). Everything else (reads, claims, listings) uses
SQLAlchemy Core as usual.

>>> store = SqlStore("sqlite://")  # an in-memory database, migrated on open
>>> store.get("nope") is None
True
"""

from __future__ import annotations

import builtins
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from statesaga.errors import ConnectionLost, DuplicateStart, EntityBusy, FencedOut, StoreError
from statesaga.store import claims as _claims
from statesaga.store import inbox as _inbox
from statesaga.store.base import HistoryRow, InboxRow, InstanceRow, Settle, Write
from statesaga.store.hot import HotConnection, HotConnections
from statesaga.store.migrate import ensure_schema
from statesaga.store.schema import OPEN_STATUSES, history, instances, metadata

__all__ = ["SqlStore"]

log = logging.getLogger("statesaga.store")

_WRITE_COLUMNS = (
    "state",
    "status",
    "context",
    "machine",
    "error",
    "output",
    "attempt",
    "due_at",
    "lease_owner",
    "lease_expires_at",
    "updated_at",
)
_INSTANCE_COLUMNS = tuple(c.name for c in instances.columns)
_HISTORY_COLUMNS = tuple(c.name for c in history.columns if c.name != "id")
_JSON_INSTANCE = frozenset({"input", "context", "output", "machine", "error"})


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
        pool_size, max_overflow: SQLAlchemy's pool (reads, claims, transactional
            steps) on PostgreSQL: ``pool_size`` kept open, ``max_overflow`` more
            at busy times.
        hot_connections: the transition hot path's own connections, at most this
            many. A process holds at most ``pool_size + max_overflow +
            hot_connections`` connections to the database.
    """

    def __init__(
        self,
        url: str | sa.Engine,
        *,
        auto_migrate: bool | None = None,
        sqlite_synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
        schema: str | None = None,
        pool_size: int = 10,
        max_overflow: int = 10,
        hot_connections: int = 10,
    ) -> None:
        self.engine = (
            url if isinstance(url, sa.Engine) else _create_engine(url, pool_size, max_overflow)
        )
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.schema = schema
        if self.is_sqlite:
            if schema is not None:
                raise StoreError("schema=... is for PostgreSQL; SQLite has one schema per file")
            _configure_sqlite(self.engine, sqlite_synchronous, busy_timeout)
        elif schema is not None:
            _use_schema(self.engine, schema)
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._mark = mark
        # psycopg 3: the hot-path connection autocommits; one statement is one transaction
        self._one_statement = (
            self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"
        )
        if self.is_sqlite:
            self._begin_sql: str | None = "BEGIN IMMEDIATE"
        elif self._one_statement:
            self._begin_sql = "BEGIN"  # the connection autocommits: open several-statement ones
        else:
            self._begin_sql = None  # the driver opens a transaction itself
        assigns = ", ".join(f"{c} = {mark}" for c in _WRITE_COLUMNS)
        self._update_sql = (
            f"UPDATE statesaga_instances SET {assigns}, version = version + 1 "
            f"WHERE id = {mark} AND version = {mark} AND epoch = {mark}"
        )
        self._insert_instance_sql = (
            f"INSERT INTO statesaga_instances ({', '.join(_INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_INSTANCE_COLUMNS))})"
        )
        self._insert_history_sql = (
            f"INSERT INTO statesaga_history ({', '.join(_HISTORY_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_HISTORY_COLUMNS))})"
        )
        # one history row joined to the instance's write; typed, as a SELECT list is not an
        # INSERT's VALUES (to text, not varchar(n): a cast would truncate what is too long)
        history_select = (
            f"INSERT INTO statesaga_history ({', '.join(_HISTORY_COLUMNS)}) "
            f"SELECT {', '.join(f'{mark}::{_pg_type(c)}' for c in _HISTORY_COLUMNS)}"
        )
        self._transition_sql = (
            f"WITH moved AS ({self._update_sql} RETURNING id) {history_select} FROM moved"
        )
        self._start_sql = (
            f"WITH started AS ({self._insert_instance_sql} RETURNING id) "
            f"{history_select} FROM started"
        )
        self._hot = HotConnections(
            self.engine,
            size=hot_connections,
            prepare=_autocommit if self._one_statement else None,
        )
        if auto_migrate is None:
            auto_migrate = self.is_sqlite
        ensure_schema(self.engine, upgrade=auto_migrate)

    # -- the hot path: raw DBAPI ----------------------------------------------------------

    def _twice(self, work: Callable[[HotConnection], None], committed: Callable[[], bool]) -> None:
        """Run ``work`` (one transaction) on a hot-path connection.

        If the connection turns out dead (the server restarted, or terminated
        the backend), the transaction is tried once more on a fresh connection,
        unless ``committed()`` says the first try made it after all (the
        connection died after the commit, before its answer arrived).
        """
        for attempt in (1, 2):
            with self._hot.connection() as hot:
                try:
                    work(hot)
                    return
                except BaseException as error:
                    if not self._lost(hot, error):
                        raise
                    if attempt == 2:
                        raise _connection_lost(error) from error
                    log.warning("the database connection was lost (%s); trying again", error)
            if committed():
                return

    def _lost(self, hot: HotConnection, error: BaseException) -> bool:
        """Roll back after ``error``; ``True`` if it cost the connection (then dropped)."""
        dialect = self.engine.dialect
        if isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
            error, hot.raw, None
        ):
            hot.broken = True
            return True
        try:
            self._rollback(hot.raw, hot.cursor)
        except dialect.loaded_dbapi.Error:
            hot.broken = True
        return False

    def _write_history(self, cursor: Any, rows: builtins.list[tuple[Any, ...]]) -> None:
        # one row is the common case; executemany costs a pipeline on psycopg
        if len(rows) == 1:
            cursor.execute(self._insert_history_sql, rows[0])
        elif rows:
            cursor.executemany(self._insert_history_sql, rows)

    def insert(self, row: InstanceRow, history_rows: Sequence[HistoryRow]) -> None:
        """Insert a new instance and its first history rows in one transaction."""
        values = [
            _dump(getattr(row, c)) if c in _JSON_INSTANCE else getattr(row, c)
            for c in _INSTANCE_COLUMNS
        ]
        rows = [_history_values(h) for h in history_rows]

        def work(hot: HotConnection) -> None:
            raw, cursor = hot.raw, hot.cursor
            if self._one_statement and len(rows) == 1:
                self._execute_committed(raw, cursor, self._start_sql, (*values, *rows[0]))
                return
            self._begin(cursor)
            cursor.execute(self._insert_instance_sql, values)
            self._write_history(cursor, rows)
            self._commit(raw, cursor)

        try:
            self._twice(work, lambda: self.get(row.id) is not None)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate_insert(error, row) from error

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
        params = (
            write.state,
            write.status,
            write.context,
            write.machine,
            write.error,
            write.output,
            write.attempt,
            write.due_at,
            write.lease_owner,
            write.lease_expires_at,
            write.updated_at,
            instance_id,
            version,
            epoch,
        )
        rows = [_history_values(h) for h in history_rows]
        if connection is not None:
            dbapi_connection = connection.connection.dbapi_connection
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(self._update_sql, params)
                if cursor.rowcount != 1:
                    raise _fenced(instance_id, version, epoch)
                self._write_history(cursor, rows)
                _inbox.settle(cursor.execute, self._mark, settle)
            except self.engine.dialect.loaded_dbapi.Error as error:
                if not self.engine.dialect.is_disconnect(error, dbapi_connection, None):
                    raise
                connection.invalidate()
                raise _connection_lost(error) from error
            return

        def work(hot: HotConnection) -> None:
            raw, cursor = hot.raw, hot.cursor
            if self._one_statement and len(rows) <= 1 and not settle:
                # one statement: the compare-and-set and its history row commit together;
                # fenced out, it moves nothing and so inserts nothing
                if rows:
                    moved = self._execute_committed(
                        raw, cursor, self._transition_sql, (*params, *rows[0])
                    )
                else:
                    moved = self._execute_committed(raw, cursor, self._update_sql, params)
                if moved != 1:
                    raise _fenced(instance_id, version, epoch)
                return
            self._begin(cursor)
            cursor.execute(self._update_sql, params)
            if cursor.rowcount != 1:
                raise _fenced(instance_id, version, epoch)
            self._write_history(cursor, rows)
            _inbox.settle(cursor.execute, self._mark, settle)
            self._commit(raw, cursor)

        def committed() -> bool:
            # only this holder writes under its epoch: one version on means its write landed
            current = self._version_epoch(instance_id)
            if current == (version + 1, epoch):
                return True
            if current == (version, epoch):
                return False
            raise _fenced(instance_id, version, epoch)

        self._twice(work, committed)

    def _version_epoch(self, instance_id: str) -> tuple[int, int] | None:
        query = sa.select(instances.c.version, instances.c.epoch).where(
            instances.c.id == instance_id
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).one_or_none()
        return None if found is None else (found.version, found.epoch)

    def _begin(self, cursor: Any) -> None:
        if self._begin_sql is not None:
            cursor.execute(self._begin_sql)

    def _execute_committed(self, raw: Any, cursor: Any, sql: str, params: Sequence[Any]) -> int:
        """Run ``sql`` as a transaction of its own on the autocommitting ``raw``; its row count.

        It is committed when this returns. If the connection is lost on the way, it
        committed entirely or not at all, and ``_abort`` makes the error a
        ``StoreError`` saying so: nothing is ever half-written.
        """
        cursor.execute(sql, params)
        return int(cursor.rowcount)

    def _commit(self, raw: Any, cursor: Any) -> None:
        if self.is_sqlite:
            cursor.execute("COMMIT")
        else:
            raw.commit()

    def _rollback(self, raw: Any, cursor: Any) -> None:
        if self.is_sqlite:
            if raw.in_transaction:
                cursor.execute("ROLLBACK")
        else:
            raw.rollback()

    def _translate_insert(self, error: Exception, row: InstanceRow) -> Exception:
        text = str(error).lower()
        if "idempotency" in text:
            return DuplicateStart(
                f"idempotency key {row.idempotency_key!r} of saga {row.saga!r} is already taken",
                saga=row.saga,
                key=row.entity_key,
            )
        if "entity" in text or "unique" in text:
            return EntityBusy(
                f"{row.entity_key} is busy: saga {row.saga!r} already has an open instance for "
                "it; wait for it to finish or send it events",
                saga=row.saga,
                key=row.entity_key,
            )
        return StoreError(f"could not insert instance {row.id}: {error}", saga=row.saga)

    # -- transactions for transactional steps --------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A SQLAlchemy connection inside a transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        try:
            with self.engine.connect() as connection, connection.begin():
                yield connection
        except sa.exc.DBAPIError as error:  # its COMMIT failed
            if not error.connection_invalidated:
                raise
            raise _connection_lost(error.orig) from error

    # -- claims and leases (SQLAlchemy Core) ----------------------------------------------

    def claim(
        self, instance_id: str, version: int, owner: str, expires_at: float, now: float
    ) -> InstanceRow:
        """Take the instance's lease and bump its epoch; the row as it now is."""
        statement = (
            sa.update(instances)
            .where(
                instances.c.id == instance_id,
                instances.c.version == version,
                # never the claimant's own live lease: another thread of the same engine
                # may be driving the run under it
                sa.or_(
                    instances.c.lease_owner.is_(None),
                    instances.c.lease_expires_at < now,
                ),
            )
            .values(
                epoch=instances.c.epoch + 1,
                version=instances.c.version + 1,
                lease_owner=owner,
                lease_expires_at=expires_at,
                updated_at=now,
            )
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount == 1:
                row = connection.execute(
                    sa.select(instances).where(instances.c.id == instance_id)
                ).one()
                return _instance(row)
            current = connection.execute(
                sa.select(instances).where(instances.c.id == instance_id)
            ).one_or_none()
        if current is not None and current.version == version:
            raise EntityBusy(
                f"instance {instance_id} is held by {current.lease_owner} until its lease "
                "expires; try again later",
                instance_id=instance_id,
                key=current.entity_key,
            )
        raise _fenced(instance_id, version, None)

    def extend_lease(self, instance_id: str, epoch: int, expires_at: float) -> bool:
        """Push the lease out, unless the epoch moved on (another holder claimed it)."""
        statement = (
            sa.update(instances)
            .where(instances.c.id == instance_id, instances.c.epoch == epoch)
            .values(lease_expires_at=expires_at)
        )
        with self.engine.begin() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    def extend_leases(self, leases: Sequence[tuple[str, int]], expires_at: float) -> set[str]:
        """Push out many leases at once; the ids whose epoch still matched.

        One statement for every (id, epoch) pair on PostgreSQL (two array
        parameters), slices of ``claims.RENEW_BATCH`` pairs elsewhere, all in
        one transaction. An id missing from the answer lost its claim (another
        holder bumped the epoch) or is gone.
        """
        if not leases:
            return set()
        if self._one_statement:
            ids = [instance_id for instance_id, _ in leases]
            epochs = [epoch for _, epoch in leases]
            with self.engine.begin() as connection:
                result = connection.exec_driver_sql(_claims.PG_RENEW_SQL, (expires_at, ids, epochs))
                return {str(value) for value in result.scalars()}
        renewed: set[str] = set()
        with self.engine.begin() as connection:
            for batch in _claims.renewal_batches(leases):
                result = connection.execute(_claims.renew_statement(batch, expires_at))
                renewed.update(str(value) for value in result.scalars())
        return renewed

    def release_lease(self, instance_id: str, epoch: int) -> bool:
        """Let the lease go without a transition, unless the epoch moved on."""
        statement = (
            sa.update(instances)
            .where(instances.c.id == instance_id, instances.c.epoch == epoch)
            .values(lease_owner=None, lease_expires_at=None)
        )
        with self.engine.begin() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    # -- reads -----------------------------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRow | None:
        """The instance with that id, or ``None``."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(instances).where(instances.c.id == instance_id)
            ).one_or_none()
        return None if row is None else _instance(row)

    def find(
        self, saga: str, *, entity_key: str | None = None, idempotency_key: str | None = None
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
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _instance(row)

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
        query = query.order_by(instances.c.created_at.desc(), instances.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [_instance(row) for row in connection.execute(query)]

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
        if before is not None:
            created_at, instance_id = before
            query = query.where(
                sa.or_(
                    instances.c.created_at < created_at,
                    sa.and_(instances.c.created_at == created_at, instances.c.id < instance_id),
                )
            )
        query = query.order_by(instances.c.created_at.desc(), instances.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [_instance(row) for row in connection.execute(query)]

    def count_by_status(self, saga: str | None = None) -> dict[tuple[str, int, str], int]:
        """How many instances there are per (saga, version, status), for one saga or all."""
        query = sa.select(
            instances.c.saga, instances.c.saga_version, instances.c.status, sa.func.count()
        ).group_by(instances.c.saga, instances.c.saga_version, instances.c.status)
        if saga is not None:
            query = query.where(instances.c.saga == saga)
        with self.engine.connect() as connection:
            return {
                (name, int(version), status): int(count)
                for name, version, status, count in connection.execute(query)
            }

    def history(self, instance_id: str) -> builtins.list[HistoryRow]:
        """The instance's history, oldest first."""
        query = (
            sa.select(history).where(history.c.instance_id == instance_id).order_by(history.c.id)
        )
        with self.engine.connect() as connection:
            return [HistoryRow(**row._asdict()) for row in connection.execute(query)]

    def ids_starting_with(self, prefix: str, limit: int = 10) -> builtins.list[str]:
        """Up to ``limit`` instance ids that start with ``prefix``, sorted (for id prefixes)."""
        query = (
            sa.select(instances.c.id)
            .where(instances.c.id.startswith(prefix, autoescape=True))
            .order_by(instances.c.id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [str(value) for value in connection.execute(query).scalars()]

    def _due_query(self, now: float, limit: int) -> sa.Select[Any]:
        """Instances that need work now and nobody holds, earliest due first.

        Every run that is not terminal has a live lease or a due time (the
        liveness invariant): so these are the runs whose holder's lease expired
        (a crash, a lost connection), the released runs whose due time passed
        (a retry's backoff, a wait's timeout, the deadline, a busy lock), and
        the released runs with events or cancels pending in their inbox. Each
        kind is read through its own partial index (see ``store.claims``).
        """
        picked = _claims.due_ids(now, limit).subquery("picked")
        return (
            sa.select(instances)
            .join(picked, picked.c.id == instances.c.id)
            .order_by(picked.c.since, instances.c.id)
        )

    def due(self, now: float, limit: int) -> builtins.list[InstanceRow]:
        """Instances that need work now and nobody holds (see :meth:`claim_due`)."""
        with self.engine.connect() as connection:
            return [_instance(row) for row in connection.execute(self._due_query(now, limit))]

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
        if sagas is not None and not sagas:
            return []
        statement = _claims.claim_statement(
            now, limit, owner, expires_at, sagas, lock=not self.is_sqlite
        )
        with self.engine.begin() as connection:
            claimed = [_instance(row) for row in connection.execute(statement)]
        return claimed

    # -- the inbox ---------------------------------------------------------------------

    def receive(self, entry: InboxRow) -> tuple[InboxRow, bool]:
        """Record an event or cancel; a duplicate event id returns the stored entry."""
        return _inbox.receive(self.engine, entry)

    def pending(self, instance_id: str) -> builtins.list[InboxRow]:
        """The run's inbox entries still to consume, oldest first."""
        return _inbox.read_inbox(self.engine, instance_id, only_pending=True)

    def inbox(self, instance_id: str) -> builtins.list[InboxRow]:
        """Every inbox entry of the run, oldest first."""
        return _inbox.read_inbox(self.engine, instance_id)

    def inbox_entry(self, instance_id: str, event_id: str) -> InboxRow | None:
        """One inbox entry, by its event id."""
        return _inbox.read_entry(self.engine, instance_id, event_id)

    def dump(self) -> dict[str, builtins.list[tuple[Any, ...]]]:
        """Every row of every table, ordered, for tests that compare before and after."""
        result: dict[str, builtins.list[tuple[Any, ...]]] = {}
        with self.engine.connect() as connection:
            for table in metadata.sorted_tables:
                order = list(table.primary_key.columns)
                rows = connection.execute(sa.select(table).order_by(*order))
                result[table.name] = [tuple(row) for row in rows]
        return result

    def execute_raw(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement in its own transaction on a hot-path connection.

        Returns the number of rows it touched.
        """
        with self._hot.connection() as hot:
            raw, cursor = hot.raw, hot.cursor
            try:
                if self._one_statement:
                    return self._execute_committed(raw, cursor, sql, params)
                self._begin(cursor)
                cursor.execute(sql, params)
                count = int(cursor.rowcount)
                self._commit(raw, cursor)
            except BaseException as error:
                if self._lost(hot, error):
                    raise _connection_lost(error) from error
                raise
        return count

    def close(self) -> None:
        """Close the hot-path connections and dispose of the connection pool."""
        self._hot.close()
        self.engine.dispose()


def _create_engine(url: str, pool_size: int, max_overflow: int) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            # one shared in-memory database for every thread, not one per thread
            return sa.create_engine(
                url, poolclass=sa.StaticPool, connect_args={"check_same_thread": False}
            )
        if parsed.get_backend_name() == "postgresql":
            # a sensible pool for many threads; dead connections are replaced, not reused
            return sa.create_engine(
                url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
            )
        return sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
        raise StoreError(
            f"cannot open a store at {url!r}: {error}; use a SQLAlchemy URL such as "
            "sqlite:///statesaga.db or postgresql+psycopg://user@host/db"
        ) from error


def _use_schema(engine: sa.Engine, schema: str) -> None:
    """Keep the store's tables (and alembic's version table) in ``schema``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise StoreError(
            f"schema={schema!r} is not a plain identifier; use letters, digits and underscores"
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cursor.execute(f"SET search_path TO {schema}")
        cursor.close()
        dbapi_connection.commit()


def _configure_sqlite(engine: sa.Engine, synchronous: str, busy_timeout: float) -> None:
    if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise StoreError(
            f"sqlite_synchronous={synchronous!r} is not a SQLite synchronous mode; "
            "use NORMAL or FULL"
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # statesaga issues BEGIN IMMEDIATE itself: the write lock is taken up front,
        # so two writers never deadlock upgrading a read lock
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _autocommit(raw: Any) -> None:
    """Make a psycopg connection autocommit: each statement a transaction of its own."""
    raw.rollback()  # whatever opening it left open (nothing, usually)
    raw.autocommit = True


def _pg_type(column: str) -> str:
    """The PostgreSQL type a parameter for history ``column`` is cast to."""
    kind = history.c[column].type
    if isinstance(kind, sa.String):
        return "text"  # assigned to varchar(n) afterwards: too long is an error, not cut
    if isinstance(kind, sa.Integer):
        return "integer"
    if isinstance(kind, sa.Float):
        return "double precision"
    if isinstance(kind, sa.JSON):
        return "jsonb"
    raise AssertionError(f"no PostgreSQL cast for history column {column}")  # pragma: no cover


def _history_values(row: HistoryRow) -> tuple[Any, ...]:
    return (
        row.instance_id,
        row.version,
        row.kind,
        row.transition,
        row.step,
        row.from_state,
        row.to_state,
        row.attempt,
        row.event,
        _dump(row.error),
        row.epoch,
        row.correlation_id,
        row.started_at,
        row.finished_at,
    )


def _instance(row: sa.Row[Any]) -> InstanceRow:
    return InstanceRow(**row._asdict())


def _connection_lost(error: BaseException | None) -> ConnectionLost:
    return ConnectionLost(
        f"lost the database connection in the middle of a transaction ({error}); it was "
        "not committed, or not confirmed: the run resumes from its last persisted "
        "transition once its lease expires (Engine.recover or `statesaga worker`)"
    )


def _fenced(instance_id: str, version: int, epoch: int | None) -> FencedOut:
    held = f"version {version}" + ("" if epoch is None else f", epoch {epoch}")
    return FencedOut(
        f"instance {instance_id} moved on since this holder read it ({held}): another "
        "engine claimed it; this write was rejected and nothing was written",
        instance_id=instance_id,
    )
