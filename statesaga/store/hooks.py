"""A seam for tests: a hook the store calls around each write of a run.

Crash and fault tests need to act at the exact moment a run's write is about
to commit, or has just committed: kill the process, terminate the database
backend, drop the connection. A :data:`WriteHook` set on a
:class:`~statesaga.store.SqlStore` is called at three moments of every start
(``insert``) and every transition:

- :attr:`WriteMoment.BEFORE_WRITE`: nothing of the write has run yet;
- :attr:`WriteMoment.BEFORE_COMMIT`: its statements ran (or, where one
  statement is the whole transaction, it is about to run), the commit has not;
- :attr:`WriteMoment.COMMITTED`: it is durable.

A transition written inside a transactional step's transaction (``joined``)
commits with that transaction, so its ``BEFORE_COMMIT`` and ``COMMITTED`` come
as the block of :meth:`~statesaga.store.SqlStore.transaction` exits. What the
hook raises propagates from the store's call as the database's own error would
(raise :class:`~statesaga.errors.ConnectionLost` to play a lost connection).
With no hook set (the default) the store checks one attribute per write.

>>> from statesaga.store import SqlStore
>>> seen = []
>>> store = SqlStore("sqlite://", hook=lambda moment, write: seen.append(moment.value))
>>> store.hook is not None
True
>>> store.close()
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from statesaga.store.base import HistoryRow

__all__ = ["StoreWrite", "WriteHook", "WriteMoment"]


class WriteMoment(enum.Enum):
    """When in a write the store calls its hook."""

    BEFORE_WRITE = "before_write"
    BEFORE_COMMIT = "before_commit"
    COMMITTED = "committed"


@attrs.frozen
class StoreWrite:
    """One write of a run, as the hook sees it."""

    instance_id: str
    history: tuple[HistoryRow, ...]
    """the history rows it appends (a start's first rows, a transition's records)."""
    joined: bool
    """written in a transactional step's transaction, committing as its block exits."""
    start: bool = False
    """the write inserts a new run (a start) rather than moving one (a transition). A
    run whose first step is transactional is inserted in that step's transaction:
    ``start`` and ``joined``, its history the start's rows and then the step's."""
    connection: Any = None
    """the DBAPI connection (psycopg's, sqlite3's) it goes through; ``None`` before a
    write of the store's own has taken one (``BEFORE_WRITE``) and once it committed."""


#: the hook: called with the moment and the write; what it raises, the store's call raises
WriteHook = Callable[[WriteMoment, StoreWrite], None]
