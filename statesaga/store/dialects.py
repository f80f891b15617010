"""What differs between databases, in one small class each, chosen once per store.

- :class:`SqliteDialect`: the embedded default. statesaga opens every write
  transaction itself with ``BEGIN IMMEDIATE`` (the write lock up front, so two
  writers never deadlock upgrading a read lock) and commits through the cursor;
  WAL, ``synchronous`` and ``busy_timeout`` are set on each new connection.
- :class:`PsycopgDialect`: PostgreSQL through psycopg 3. The hot path's
  connections autocommit, so a transition with one history row is one
  statement (one round trip); claims lock ``FOR UPDATE SKIP LOCKED``; leases
  are renewed by one statement over two arrays.
- :class:`Dialect`: anything else SQLAlchemy speaks (the driver opens
  transactions itself).

Each also names the unique constraint an insert violated, from what the
driver reports (psycopg's ``diag.constraint_name``; SQLite's message names the
columns), never from the wording of the message.

>>> import sqlalchemy as sa
>>> dialect = dialect_for(sa.create_engine("sqlite://"))
>>> type(dialect).__name__, dialect.begin_sql, dialect.mark
('SqliteDialect', 'BEGIN IMMEDIATE', '?')
>>> import sqlite3
>>> dialect.violated(sqlite3.IntegrityError(
...     "UNIQUE constraint failed: statesaga_instances.saga, statesaga_instances.idempotency_key"))
'uq_statesaga_idempotency'
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from statesaga.errors import StoreBusy, StoreError
from statesaga.store import claims as _claims
from statesaga.store.schema import instances
from statesaga.store.sqlite_writers import Writers, writers_for

__all__ = [
    "APP_SCHEMAS",
    "READ_ONLY",
    "Dialect",
    "PsycopgDialect",
    "SqliteDialect",
    "dialect_for",
    "is_busy",
    "reading",
    "search_path",
    "store_busy",
    "use_schema",
]

#: the schemas after a store's own on its connections' search_path, unless told otherwise
APP_SCHEMAS: tuple[str, ...] = ("public",)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Dialect:
    """Any database SQLAlchemy speaks: the driver opens transactions, the DBAPI commits.

    Args:
        engine: the store's SQLAlchemy engine.
    """

    #: opens a several-statement transaction on a hot-path connection (``None``: the driver does)
    begin_sql: str | None = None
    #: a hot write of one statement is a transaction of its own (the connection autocommits)
    one_statement = False
    #: claims lock their candidates (``FOR UPDATE SKIP LOCKED``); SQLite's write lock serialises
    lock_claims = True

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        #: the DBAPI's parameter marker
        self.mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"

    def configure(
        self,
        *,
        schema: str | None,
        synchronous: str,
        busy_timeout: float,
        app_schemas: Sequence[str] = APP_SCHEMAS,
    ) -> None:
        """Set up the engine's new connections (``synchronous``/``busy_timeout``: SQLite's)."""
        del synchronous, busy_timeout
        if schema is not None:
            use_schema(self.engine, schema, app_schemas)

    def prepare_hot(self, raw: Any) -> None:
        """Make a new hot-path connection ready (nothing to do here)."""

    def begin(self, raw: Any, cursor: Any) -> None:
        """Open a several-statement transaction on a hot-path connection."""
        if self.begin_sql is not None:
            cursor.execute(self.begin_sql)

    def returned(self, raw: Any) -> None:
        """A hot-path connection went back to its pool (its transaction is over)."""

    def commit(self, raw: Any, cursor: Any) -> None:
        """Commit the hot-path connection's transaction."""
        raw.commit()

    def rollback(self, raw: Any, cursor: Any) -> None:
        """Roll back the hot-path connection's transaction."""
        raw.rollback()

    def violated(self, error: BaseException) -> str | None:
        """The unique constraint (or index) ``error`` reports violated, if it says which."""
        name = getattr(getattr(error, "diag", None), "constraint_name", None)
        return str(name) if name else None

    def hot_renewal(
        self, leases: Sequence[tuple[str, int]], expires_at: float
    ) -> tuple[str, tuple[Any, ...]] | None:
        """The one statement (and its parameters) that renews ``leases`` on a hot-path
        connection, where the dialect has one; ``None``: renew through :meth:`renew`."""
        return None

    def renew(
        self, connection: sa.Connection, leases: Sequence[tuple[str, int]], expires_at: float
    ) -> set[str]:
        """Push out the leases whose (id, epoch) still match; their ids."""
        renewed: set[str] = set()
        for batch in _claims.renewal_batches(leases):
            result = connection.execute(_claims.renew_statement(batch, expires_at))
            renewed.update(str(value) for value in result.scalars())
        return renewed


class SqliteDialect(Dialect):
    """SQLite: ``BEGIN IMMEDIATE``, ``COMMIT`` through the cursor, WAL and a busy timeout.

    A database file's writers in this process queue on its :class:`Writers`
    lock (see :mod:`statesaga.store.sqlite_writers`) before ``BEGIN IMMEDIATE``.
    """

    begin_sql = "BEGIN IMMEDIATE"
    lock_claims = False

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        database = engine.url.database
        in_memory = database in (None, "", ":memory:") or "mode=memory" in str(engine.url)
        #: the file's in-process write lock (``None`` in memory: one shared connection)
        self.writers: Writers | None = None if in_memory else writers_for(str(database))
        self.busy_timeout = 10.0

    def configure(
        self,
        *,
        schema: str | None,
        synchronous: str,
        busy_timeout: float,
        app_schemas: Sequence[str] = APP_SCHEMAS,
    ) -> None:
        if schema is not None:
            raise StoreError("schema=... is for PostgreSQL; SQLite has one schema per file")
        self.busy_timeout = busy_timeout
        _configure_sqlite(self.engine, synchronous, busy_timeout, self.writers)

    def begin(self, raw: Any, cursor: Any) -> None:
        writers = self.writers
        if writers is None:
            cursor.execute("BEGIN IMMEDIATE")
            return
        writers.acquire(owner=id(raw), timeout=self.busy_timeout)
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(owner=id(raw))
            raise

    def returned(self, raw: Any) -> None:
        if self.writers is not None:
            self.writers.release(owner=id(raw))

    def commit(self, raw: Any, cursor: Any) -> None:
        cursor.execute("COMMIT")
        if self.writers is not None:
            self.writers.release(owner=id(raw))

    def rollback(self, raw: Any, cursor: Any) -> None:
        try:
            if raw.in_transaction:
                cursor.execute("ROLLBACK")
        finally:
            if self.writers is not None and not raw.in_transaction:
                self.writers.release(owner=id(raw))

    def violated(self, error: BaseException) -> str | None:
        # "UNIQUE constraint failed: statesaga_instances.saga, statesaga_instances.entity_key"
        text = str(error.args[0]) if error.args else ""
        _, found, columns = text.partition("UNIQUE constraint failed: ")
        if not found:
            return None
        return _UNIQUE_BY_COLUMNS.get(frozenset(c.strip() for c in columns.split(",")))


class PsycopgDialect(Dialect):
    """PostgreSQL through psycopg 3: autocommitting hot path, one-statement writes."""

    begin_sql = "BEGIN"  # the hot connections autocommit: open several-statement ones
    one_statement = True

    def prepare_hot(self, raw: Any) -> None:
        """Make a psycopg connection autocommit: each statement a transaction of its own."""
        raw.rollback()  # whatever opening it left open (nothing, usually)
        raw.autocommit = True

    def hot_renewal(
        self, leases: Sequence[tuple[str, int]], expires_at: float
    ) -> tuple[str, tuple[Any, ...]]:
        """Every pair in two array parameters: one statement, however many leases."""
        ids = [instance_id for instance_id, _ in leases]
        epochs = [epoch for _, epoch in leases]
        return _claims.PG_RENEW_SQL, (expires_at, ids, epochs)


def dialect_for(engine: sa.Engine) -> Dialect:
    """The dialect class for ``engine``'s database and driver."""
    if engine.dialect.name == "sqlite":
        return SqliteDialect(engine)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PsycopgDialect(engine)
    return Dialect(engine)


# SQLite names the columns of the unique index it found violated, not the index
_UNIQUE_BY_COLUMNS = {
    frozenset(f"{instances.name}.{column.name}" for column in index.columns): str(index.name)
    for index in instances.indexes
    if index.unique
}


def use_schema(engine: sa.Engine, schema: str, app_schemas: Sequence[str] = APP_SCHEMAS) -> None:
    """Keep the store's tables (and alembic's version table) in ``schema``.

    Each connection's ``search_path`` is ``schema`` then ``app_schemas``: the
    store's tables are found (and created) first, and a transactional step's
    ``ctx.connection`` still finds the application's tables by their plain names.

    >>> search_path("sagas", ["public", "shop"])
    'sagas, public, shop'
    """
    path = search_path(schema, app_schemas)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cursor.execute(f"SET search_path TO {path}")
        cursor.close()
        dbapi_connection.commit()


def search_path(schema: str, app_schemas: Sequence[str]) -> str:
    """The ``search_path`` of a store in ``schema``: its own, then the application's."""
    if isinstance(app_schemas, str):  # one name, not its letters
        app_schemas = (app_schemas,)
    for what, names in (("schema", [schema]), ("app_schemas", list(app_schemas))):
        for name in names:
            if not _IDENTIFIER.fullmatch(name):
                raise StoreError(
                    f"{what}: {name!r} is not a plain identifier; use letters, digits and "
                    "underscores"
                )
    return ", ".join(dict.fromkeys([schema, *app_schemas]))


#: the execution option that marks a connection as only reading (``reading``)
READ_ONLY = "statesaga_read_only"


def reading(engine: sa.Engine) -> sa.Connection:
    """A connection for reads only: on SQLite its transaction takes no write lock.

    Writes go through ``engine.begin()`` (``BEGIN IMMEDIATE`` on SQLite, so two
    writers never deadlock upgrading a read lock); reads need no such lock, and
    under WAL a read never waits for a writer.
    """
    return engine.connect().execution_options(**{READ_ONLY: True})


# SQLITE_BUSY and SQLITE_LOCKED: another connection held the lock past the busy timeout
_SQLITE_BUSY_CODES = frozenset({5, 6})


def is_busy(error: BaseException) -> bool:
    """The database stayed locked by another writer past its busy timeout (SQLite)."""
    if isinstance(error, StoreBusy):
        return True
    original = getattr(error, "orig", error)
    return getattr(original, "sqlite_errorcode", None) in _SQLITE_BUSY_CODES


def store_busy(error: BaseException) -> StoreBusy:
    """The :class:`StoreBusy` a write that outwaited SQLite's busy timeout raises."""
    return StoreBusy(
        f"the SQLite database stayed locked by another writer past the store's busy_timeout "
        f"({getattr(error, 'orig', None) or error}); nothing of this write was done: a run "
        "it interrupted is resumed by a worker, a start or send can be repeated; raise "
        "busy_timeout, or keep long writes of other processes off this file"
    )


def _configure_sqlite(
    engine: sa.Engine, synchronous: str, busy_timeout: float, writers: Writers | None
) -> None:
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
        # a read (see ``reading``) takes no write lock: in WAL it never waits on a writer
        if connection.get_execution_options().get(READ_ONLY, False):
            connection.exec_driver_sql("BEGIN")
            return
        if writers is None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        owner = id(connection.connection.dbapi_connection)
        try:
            writers.acquire(owner=owner, timeout=busy_timeout)
        except sqlite3.OperationalError as busy:
            raise store_busy(busy) from busy
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(owner=owner)
            raise

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        # every statement through SQLAlchemy (claims, leases, a step's own writes) that
        # outwaited the busy timeout is the store being busy, as on the hot path
        if is_busy(context.original_exception):
            raise store_busy(context.original_exception) from context.original_exception

    if writers is not None:
        _release_writers_on_end(engine, writers)


def _release_writers_on_end(engine: sa.Engine, writers: Writers) -> None:
    """Give a file's write lock back the moment a SQLAlchemy transaction ends.

    SQLAlchemy announces a commit or rollback before the DBAPI's; the lock is
    given back only once the transaction is over, so the COMMIT or ROLLBACK is
    sent here (the DBAPI's own then finds nothing to end). Should either fail,
    the lock stays with the transaction until SQLAlchemy's call ends it, or the
    connection goes back to the pool.
    """

    def end(connection: sa.Connection, sql: str) -> None:
        if connection.invalidated:
            return  # its DBAPI connection is being discarded: the pool's event gives it back
        raw = connection.connection.dbapi_connection
        if raw is None or writers.holder != id(raw):
            return
        with suppress(sqlite3.Error):
            if raw.in_transaction:
                raw.execute(sql)
        if not raw.in_transaction:
            writers.release(owner=id(raw))

    @event.listens_for(engine, "commit")
    def _on_commit(connection: sa.Connection) -> None:
        end(connection, "COMMIT")

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: sa.Connection) -> None:
        end(connection, "ROLLBACK")

    def returned(dbapi_connection: Any, *_: Any) -> None:
        writers.release(owner=id(dbapi_connection))

    for moment in ("checkin", "reset", "invalidate", "close", "close_detached"):
        event.listen(engine, moment, returned)
