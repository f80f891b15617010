"""The hot path's SQL, written once per DBAPI parameter marker.

A transition's compare-and-set UPDATE comes in one shape per set of columns
it keeps (``Write.keep``: indexed columns it leaves as the row holds them), so
an ordinary transition rewrites no index entry; each shape is written once and
cached. On PostgreSQL each also has a one-statement form that appends the
history row in the same statement::

    WITH moved AS (UPDATE statesaga_instances SET ... WHERE id = %s
                   AND version = %s AND epoch = %s RETURNING id)
    INSERT INTO statesaga_history (...) SELECT ... FROM moved

>>> sql = Statements("?")
>>> sql.updating(frozenset({"status", "due_at", "lease_owner", "lease_expires_at"}))[0]
'UPDATE statesaga_instances SET state = ?, context = ?, machine = ?, error = ?, output = ?, \
attempt = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ? AND epoch = ?'
"""

from __future__ import annotations

import sqlalchemy as sa

from statesaga.store.schema import history, instances

__all__ = ["HISTORY_COLUMNS", "INSTANCE_COLUMNS", "JSON_INSTANCE", "WRITE_COLUMNS", "Statements"]

WRITE_COLUMNS = (
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
INSTANCE_COLUMNS = tuple(c.name for c in instances.columns)
HISTORY_COLUMNS = tuple(c.name for c in history.columns if c.name != "id")
JSON_INSTANCE = frozenset({"input", "context", "output", "machine", "error"})


class Statements:
    """The hot path's statements, written once for the DBAPI's parameter marker."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.insert_instance = (
            f"INSERT INTO statesaga_instances ({', '.join(INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(INSTANCE_COLUMNS))})"
        )
        self.insert_history = (
            f"INSERT INTO statesaga_history ({', '.join(HISTORY_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(HISTORY_COLUMNS))})"
        )
        # one history row joined to the instance's write; typed, as a SELECT list is not an
        # INSERT's VALUES (to text, not varchar(n): a cast would truncate what is too long)
        self._history_values = ", ".join(f"{mark}::{_pg_type(c)}" for c in HISTORY_COLUMNS)
        self.history_select = (
            f"INSERT INTO statesaga_history ({', '.join(HISTORY_COLUMNS)}) "
            f"SELECT {self._history_values}"
        )
        # by the columns a write keeps: (its UPDATE, its one-statement form)
        self._updates: dict[frozenset[str], tuple[str, str]] = {}
        # a migration moves the run onto another version of its saga, in the same compare-and-set
        self.migrate = self.updating(frozenset())[0].replace(
            "SET ", f"SET saga_version = {mark}, graph_hash = {mark}, ", 1
        )
        self.start = self.starting(1)

    def starting(self, rows: int) -> str:
        """The instance's INSERT and ``rows`` history rows, as one statement.

        >>> Statements("%s").starting(2).count("FROM started")
        2
        """
        more = f" FROM started UNION ALL SELECT {self._history_values}" * (rows - 1)
        return (
            f"WITH started AS ({self.insert_instance} RETURNING id) "
            f"{self.history_select}{more} FROM started"
        )

    def updating(self, keep: frozenset[str]) -> tuple[str, str]:
        """The compare-and-set UPDATE that leaves ``keep`` as they are, and its one-statement
        form with a history row (``WITH moved AS (UPDATE ...) INSERT ...``)."""
        found = self._updates.get(keep)
        if found is None:
            mark = self.mark
            assigns = ", ".join(f"{c} = {mark}" for c in WRITE_COLUMNS if c not in keep)
            update = (
                f"UPDATE statesaga_instances SET {assigns}, version = version + 1 "
                f"WHERE id = {mark} AND version = {mark} AND epoch = {mark}"
            )
            found = (
                update,
                f"WITH moved AS ({update} RETURNING id) {self.history_select} FROM moved",
            )
            self._updates[keep] = found
        return found


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
