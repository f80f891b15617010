"""Writes that join a transactional step's own transaction, and commit with it.

A transactional step runs in a transaction of :meth:`SqlStore.transaction
<statesaga.store.SqlStore.transaction>`; the run's transition is written in
that transaction (``transition(..., connection)``), and so is a run being
started whose first step is transactional (``insert(..., connection)``): the
instance row and its first history rows, with that step's transition. On
PostgreSQL each is one statement::

    WITH started AS (INSERT INTO statesaga_instances ... RETURNING id)
    INSERT INTO statesaga_history (...) SELECT ... FROM started
    UNION ALL SELECT ... FROM started

A :data:`~statesaga.store.hooks.WriteHook` sees such a write begin where it
is written, and its ``BEFORE_COMMIT`` and ``COMMITTED`` as the transaction's
block exits (:meth:`JoinedWrites.joining`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga.errors import ConnectionLost, FencedOut
from statesaga.store import inbox as _inbox
from statesaga.store.base import HistoryRow, InstanceRow, Settle
from statesaga.store.dialects import Dialect
from statesaga.store.hooks import StoreWrite, WriteHook, WriteMoment
from statesaga.store.statements import Statements

__all__ = ["JoinedWrites", "connection_lost", "fenced"]


class JoinedWrites:
    """The part of :class:`~statesaga.store.writes.HotWrites` that writes in a step's
    transaction (a mixin: it uses the hot path's statements and errors)."""

    engine: sa.Engine
    dialect: Dialect
    sql: Statements
    hook: WriteHook | None
    #: a hook's joined writes by their transaction's connection, till it commits
    joined: dict[int, list[StoreWrite]]
    _one_statement: bool
    _write_history: Callable[[Any, list[tuple[Any, ...]]], None]
    _translate_insert: Callable[[Exception, InstanceRow], Exception]

    @contextmanager
    def joining(self, connection: Any, joined: list[StoreWrite]) -> Iterator[None]:
        """Around a step's transaction on ``connection``: collect the writes that join it.

        With a hook set, the transitions written in it are added to ``joined`` and
        the hook sees their ``BEFORE_COMMIT`` as the block ends without an error;
        :meth:`committed` gives their ``COMMITTED`` once the transaction committed.
        """
        hook = self.hook
        if hook is None:
            yield
            return
        self.joined[id(connection)] = joined
        try:
            yield
            for write in joined:
                hook(WriteMoment.BEFORE_COMMIT, write)
        finally:
            del self.joined[id(connection)]

    def committed(self, joined: list[StoreWrite]) -> None:
        """The hook's ``COMMITTED`` for the writes a step's transaction just committed."""
        hook = self.hook
        if hook is not None:
            for write in joined:
                hook(WriteMoment.COMMITTED, attrs.evolve(write, connection=None))

    def _announce_joined(
        self,
        hook: WriteHook,
        connection: Any,
        instance_id: str,
        history_rows: Sequence[HistoryRow],
        *,
        start: bool = False,
    ) -> None:
        raw = connection.connection.dbapi_connection
        write = StoreWrite(
            instance_id, tuple(history_rows), joined=True, connection=raw, start=start
        )
        hook(WriteMoment.BEFORE_WRITE, write)
        bucket = self.joined.get(id(connection))
        if bucket is not None:
            bucket.append(write)

    def _join(
        self,
        connection: Any,
        instance_id: str,
        version: int,
        epoch: int,
        keep: frozenset[str],
        params: tuple[Any, ...],
        rows: list[tuple[Any, ...]],
        settle: Sequence[Settle],
    ) -> None:
        """The transition's writes inside a step's own transaction (it commits them)."""
        update, one_statement = self.sql.updating(keep)
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            if self._one_statement and len(rows) == 1:
                # the compare-and-set and its history row in one round trip (fenced out,
                # it moves nothing and so inserts nothing)
                cursor.execute(one_statement, (*params, *rows[0]))
                if cursor.rowcount != 1:
                    raise fenced(instance_id, version, epoch)
            else:
                cursor.execute(update, params)
                if cursor.rowcount != 1:
                    raise fenced(instance_id, version, epoch)
                self._write_history(cursor, rows)
            _inbox.settle(cursor.execute, self.dialect.mark, settle)
        except self.engine.dialect.loaded_dbapi.Error as error:
            if not self.engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise
            connection.invalidate()
            raise connection_lost(error) from error

    def _insert_joined(
        self, connection: Any, row: InstanceRow, values: list[Any], rows: list[tuple[Any, ...]]
    ) -> None:
        """The instance's INSERT and its history inside a step's transaction (one statement
        on PostgreSQL)."""
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            if self._one_statement and rows:
                cursor.execute(self.sql.starting(len(rows)), [*values, *chain(*rows)])
            else:
                cursor.execute(self.sql.insert_instance, values)
                self._write_history(cursor, rows)
        except dbapi.Error as error:
            if self.engine.dialect.is_disconnect(error, dbapi_connection, None):
                connection.invalidate()
                raise connection_lost(error) from error
            raise self._translate_insert(error, row) from error


def connection_lost(error: BaseException | None) -> ConnectionLost:
    """The error for a connection lost mid-transaction: nothing half-written, and what next."""
    return ConnectionLost(
        f"lost the database connection in the middle of a transaction ({error}); it was "
        "not committed, or not confirmed: the run resumes from its last persisted "
        "transition once its lease expires (Engine.recover or `statesaga worker`)"
    )


def fenced(instance_id: str, version: int, epoch: int | None) -> FencedOut:
    """The error for a write whose (version, epoch) moved on: another engine claimed the run."""
    held = f"version {version}" + ("" if epoch is None else f", epoch {epoch}")
    return FencedOut(
        f"instance {instance_id} moved on since this holder read it ({held}): another "
        "engine claimed it; this write was rejected and nothing was written",
        instance_id=instance_id,
    )
