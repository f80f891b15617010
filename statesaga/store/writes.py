"""The transition hot path: hand-written statements on the raw DBAPI connection.

SQLAlchemy's per-statement overhead would otherwise dominate a SQLite
commit. Where the dialect autocommits (psycopg 3), a write with at most one
history row is a single statement, one round trip instead of four
(``BEGIN``, UPDATE, INSERT, ``COMMIT``)::

    WITH moved AS (UPDATE statesaga_instances SET ... WHERE id = %s
                   AND version = %s AND epoch = %s RETURNING id)
    INSERT INTO statesaga_history (...) SELECT ... FROM moved

A statement is a transaction of its own: the compare-and-set and the history
row commit together or not at all, and a fenced-out holder's statement
inserts nothing (row count 0). Elsewhere a write is ``begin`` (the
dialect's), the statements, and a commit.

A :data:`~statesaga.store.hooks.WriteHook`, when one is set, is called
before each write, just before its commit and once it committed: the seam
crash and fault tests act through (see :mod:`statesaga.store.hooks`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga.errors import (
    DuplicateStart,
    EntityBusy,
    StoreError,
)
from statesaga.serde import dumps
from statesaga.store import inbox as _inbox
from statesaga.store.base import HistoryRow, InstanceRow, Settle, Write
from statesaga.store.dialects import Dialect, is_busy, reading, store_busy
from statesaga.store.hooks import StoreWrite, WriteHook, WriteMoment
from statesaga.store.hot import HotConnection, HotConnections
from statesaga.store.joined import JoinedWrites, connection_lost, fenced
from statesaga.store.schema import instances
from statesaga.store.statements import INSTANCE_COLUMNS, JSON_INSTANCE, WRITE_COLUMNS, Statements

__all__ = ["HotWrites", "connection_lost", "dump_json", "fenced", "store_busy"]

log = logging.getLogger("statesaga.store")


class HotWrites(JoinedWrites):
    """Inserts, transitions and one-statement writes on the hot path's own connections.

    Args:
        engine: the store's engine (for the reads that tell whether a lost write landed).
        dialect: how this database begins, commits and reports violations.
        hot: the hot path's connections.
    """

    def __init__(self, engine: sa.Engine, dialect: Dialect, hot: HotConnections) -> None:
        self.engine = engine
        self.dialect = dialect
        self.hot = hot
        self.hook: WriteHook | None = None
        # a hook's joined writes by their transaction's connection, till it commits
        self.joined: dict[int, list[StoreWrite]] = {}
        self.sql = Statements(dialect.mark)
        # one statement is one transaction only where the connection autocommits
        self._one_statement = dialect.one_statement

    def insert(
        self,
        row: InstanceRow,
        history_rows: Sequence[HistoryRow],
        connection: Any = None,
        write: Write | None = None,
    ) -> None:
        """Insert a new instance and its first history rows in one transaction.

        With ``connection``, inside that (a step's) transaction, which commits it;
        ``write``, if given, is the first transition's, whose values the row takes
        (its version one more than ``row``'s).
        """
        values = _instance_values(row, write)
        rows = [_history_values(h) for h in history_rows]
        hook = self.hook
        if connection is not None:
            if hook is not None:
                self._announce_joined(hook, connection, row.id, history_rows, start=True)
            self._insert_joined(connection, row, values, rows)
            return
        seen = None if hook is None else _announce(hook, row.id, history_rows, start=True)

        def work(hot: HotConnection) -> None:
            raw, cursor = hot.raw, hot.cursor
            if self._one_statement and len(rows) == 1:
                if seen is not None:
                    seen.before_commit(raw)
                cursor.execute(self.sql.start, (*values, *rows[0]))
                return
            self.dialect.begin(raw, cursor)
            cursor.execute(self.sql.insert_instance, values)
            self._write_history(cursor, rows)
            if seen is not None:
                seen.before_commit(raw)
            self.dialect.commit(raw, cursor)

        try:
            self._twice(work, lambda: self._version_epoch(row.id) is not None)
        except StoreError:
            raise
        except Exception as error:
            raise self._translate_insert(error, row) from error
        if seen is not None:
            seen.committed()

    def transition(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        write: Write,
        history_rows: Sequence[HistoryRow],
        connection: Any,
        settle: Sequence[Settle],
    ) -> None:
        """Compare-and-set on (version, epoch), append history, settle inbox entries."""
        params = (*_write_values(write), instance_id, version, epoch)
        update, one_statement = self.sql.updating(write.keep)
        rows = [_history_values(h) for h in history_rows]
        hook = self.hook
        if connection is not None:
            if hook is not None:
                self._announce_joined(hook, connection, instance_id, history_rows)
            self._join(connection, instance_id, version, epoch, write.keep, params, rows, settle)
            return
        seen = None if hook is None else _announce(hook, instance_id, history_rows)

        def work(hot: HotConnection) -> None:
            raw, cursor = hot.raw, hot.cursor
            if self._one_statement and len(rows) <= 1 and not settle:
                # one statement: the compare-and-set and its history row commit together;
                # fenced out, it moves nothing and so inserts nothing
                if rows:
                    sql, values = one_statement, (*params, *rows[0])
                else:
                    sql, values = update, params
                if seen is not None:
                    seen.before_commit(raw)
                cursor.execute(sql, values)
                if cursor.rowcount != 1:
                    raise fenced(instance_id, version, epoch)
                return
            self.dialect.begin(raw, cursor)
            cursor.execute(update, params)
            if cursor.rowcount != 1:
                raise fenced(instance_id, version, epoch)
            self._write_history(cursor, rows)
            _inbox.settle(cursor.execute, self.dialect.mark, settle)
            if seen is not None:
                seen.before_commit(raw)
            self.dialect.commit(raw, cursor)

        self._twice(work, self._landed(instance_id, version, epoch))
        if seen is not None:
            seen.committed()

    def migrate(
        self,
        instance_id: str,
        version: int,
        epoch: int,
        saga: tuple[int, str],
        write: Write,
        history_rows: Sequence[HistoryRow],
    ) -> None:
        """Move a claimed run onto saga version and graph hash ``saga``: one compare-and-set."""
        # a migration writes every column (the statement has no kept ones)
        params = (
            *saga,
            *_write_values(attrs.evolve(write, keep=frozenset())),
            instance_id,
            version,
            epoch,
        )
        rows = [_history_values(h) for h in history_rows]

        def work(hot: HotConnection) -> None:
            raw, cursor = hot.raw, hot.cursor
            self.dialect.begin(raw, cursor)
            cursor.execute(self.sql.migrate, params)
            if cursor.rowcount != 1:
                raise fenced(instance_id, version, epoch)
            self._write_history(cursor, rows)
            self.dialect.commit(raw, cursor)

        self._twice(work, self._landed(instance_id, version, epoch))

    def _landed(self, instance_id: str, version: int, epoch: int) -> Callable[[], bool]:
        def committed() -> bool:
            # only this holder writes under its epoch: one version on means its write landed
            current = self._version_epoch(instance_id)
            if current == (version + 1, epoch):
                return True
            if current == (version, epoch):
                return False
            raise fenced(instance_id, version, epoch)

        return committed

    def execute(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write statement in its own transaction; the number of rows it touched."""
        with self.hot.connection() as hot:
            raw, cursor = hot.raw, hot.cursor
            try:
                if self._one_statement:
                    cursor.execute(sql, params)
                    return int(cursor.rowcount)
                self.dialect.begin(raw, cursor)
                cursor.execute(sql, params)
                count = int(cursor.rowcount)
                self.dialect.commit(raw, cursor)
            except BaseException as error:
                if self._lost(hot, error):
                    raise connection_lost(error) from error
                if is_busy(error):
                    raise store_busy(error) from error
                raise
        return count

    def returning(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one autocommitting statement with ``RETURNING`` (one column); its values.

        For dialects whose hot-path connections autocommit (``one_statement``).
        """
        assert self._one_statement, "one statement is one transaction only with autocommit"
        with self.hot.connection() as hot:
            try:
                hot.cursor.execute(sql, params)
                return [row[0] for row in hot.cursor.fetchall()]
            except BaseException as error:
                if self._lost(hot, error):
                    raise connection_lost(error) from error
                raise

    # -- the parts --------------------------------------------------------------------------

    def _twice(self, work: Callable[[HotConnection], None], committed: Callable[[], bool]) -> None:
        """Run ``work`` (one transaction) on a hot-path connection.

        If the connection turns out dead (the server restarted, or terminated
        the backend), the transaction is tried once more on a fresh connection,
        unless ``committed()`` says the first try made it after all (the
        connection died after the commit, before its answer arrived).
        """
        pool = self.hot
        for attempt in (1, 2):
            hot = pool.take()  # (not ``pool.connection()``: this is every write's path)
            try:
                work(hot)
                return
            except BaseException as error:
                if not self._lost(hot, error):
                    if is_busy(error):
                        raise store_busy(error) from error
                    raise
                if attempt == 2:
                    raise connection_lost(error) from error
                log.warning("the database connection was lost (%s); trying again", error)
            finally:
                pool.give_back(hot)
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
            self.dialect.rollback(hot.raw, hot.cursor)
        except dialect.loaded_dbapi.Error:
            hot.broken = True
        return False

    def _write_history(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        # one row is the common case; executemany costs a pipeline on psycopg
        if len(rows) == 1:
            cursor.execute(self.sql.insert_history, rows[0])
        elif rows:
            cursor.executemany(self.sql.insert_history, rows)

    def _version_epoch(self, instance_id: str) -> tuple[int, int] | None:
        query = sa.select(instances.c.version, instances.c.epoch).where(
            instances.c.id == instance_id
        )
        with reading(self.engine) as connection:
            found = connection.execute(query).one_or_none()
        return None if found is None else (found.version, found.epoch)

    def _translate_insert(self, error: Exception, row: InstanceRow) -> Exception:
        violated = self.dialect.violated(error)
        if violated == "uq_statesaga_idempotency":
            return DuplicateStart(
                f"idempotency key {row.idempotency_key!r} of saga {row.saga!r} is already taken",
                saga=row.saga,
                key=row.entity_key,
            )
        if violated == "uq_statesaga_open_entity":
            return EntityBusy(
                f"{row.entity_key} is busy: saga {row.saga!r} already has an open instance for "
                "it; wait for it to finish or send it events",
                saga=row.saga,
                key=row.entity_key,
            )
        return StoreError(f"could not insert instance {row.id}: {error}", saga=row.saga)


@attrs.frozen
class _Seen:
    """A write of the store's own that a hook saw begin: its commit's two moments."""

    hook: WriteHook
    write: StoreWrite

    def before_commit(self, raw: Any) -> None:
        self.hook(WriteMoment.BEFORE_COMMIT, attrs.evolve(self.write, connection=raw))

    def committed(self) -> None:
        self.hook(WriteMoment.COMMITTED, self.write)


def _announce(
    hook: WriteHook, instance_id: str, history_rows: Sequence[HistoryRow], *, start: bool = False
) -> _Seen:
    write = StoreWrite(instance_id, tuple(history_rows), joined=False, start=start)
    hook(WriteMoment.BEFORE_WRITE, write)
    return _Seen(hook, write)


def dump_json(value: Any) -> str | None:
    """``value`` as compact JSON text (``None`` stays SQL NULL)."""
    return None if value is None else dumps(value)


def _instance_values(row: InstanceRow, write: Write | None) -> list[Any]:
    """The INSERT's parameters: ``row``'s, or with ``write`` its first transition's."""
    values = [
        dump_json(getattr(row, c)) if c in JSON_INSTANCE else getattr(row, c)
        for c in INSTANCE_COLUMNS
    ]
    if write is not None:
        for column, value in zip(WRITE_COLUMNS, _ALL_WRITE(write), strict=True):
            values[_INSTANCE_INDEX[column]] = value  # (JSON already encoded)
        values[_INSTANCE_INDEX["version"]] = row.version + 1
    return values


_INSTANCE_INDEX = {column: index for index, column in enumerate(INSTANCE_COLUMNS)}
_ALL_WRITE = operator.attrgetter(*WRITE_COLUMNS)


def _write_values(write: Write) -> tuple[Any, ...]:
    """The UPDATE's parameters: the write's columns but those it keeps, in statement order."""
    values = _ALL_WRITE(write)  # (in C, in statement order)
    keep = write.keep
    if keep:
        pick = _PICKS.get(keep)
        if pick is None:
            pick = _PICKS[keep] = _picking(keep)
        return pick(values)
    return values


#: per kept set, the UPDATE's parameters picked out of all the write's values (in C)
_PICKS: dict[frozenset[str], Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {}


def _picking(keep: frozenset[str]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """What picks the values of the columns a write sets (those it does not keep)."""
    indexes = [i for i, column in enumerate(WRITE_COLUMNS) if column not in keep]
    if len(indexes) == 1:  # (itemgetter of one index gives the item, not a tuple)
        only = indexes[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indexes)


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
        dump_json(row.error),
        row.epoch,
        row.correlation_id,
        row.started_at,
        row.finished_at,
    )
