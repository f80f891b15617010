"""The transition hot path's connections: few, bounded, and replaced when they die.

A transition is one short transaction on a raw DBAPI connection (checking a
connection out of SQLAlchemy's pool for each one costs more than a SQLite
commit). These connections live in a small pool of their own, bounded like
SQLAlchemy's: a process never holds more than ``size`` of them, however many
threads drive runs; a thread that finds them all busy waits its turn (served
in the order threads came, so none waits behind later ones). A
connection that failed with a disconnect is dropped, so the next transaction
opens a fresh one.

>>> import sqlalchemy as sa
>>> hot = HotConnections(sa.create_engine("sqlite://"), size=2)
>>> with hot.connection() as first:
...     first.cursor.execute("SELECT 1").fetchone()
(1,)
>>> hot.open, hot.size
(1, 2)
>>> hot.close()
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import sqlalchemy as sa

from statesaga.errors import StoreError
from statesaga.store.pool import Waiter

__all__ = ["HotConnection", "HotConnections"]


class HotConnection:
    """One raw DBAPI connection of the hot path, with its cursor made once."""

    __slots__ = ("broken", "cursor", "raw")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.cursor = raw.cursor()
        self.broken = False


class HotConnections:
    """A bounded LIFO pool of raw DBAPI connections for the hot path.

    Args:
        engine: the SQLAlchemy engine whose URL (and connect events) they use.
        size: at most this many open at once (an in-memory SQLite database,
            one connection shared by every thread, always has exactly one).
        prepare: called on each new raw connection (e.g. to make it autocommit).
        returned: called with a raw connection each time it comes back, its
            transaction over (e.g. to give back a lock the transaction took).
        timeout: seconds a thread waits for a free connection before a
            ``StoreError`` says the pool is too small for the work.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        size: int,
        prepare: Callable[[Any], None] | None = None,
        returned: Callable[[Any], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise StoreError(f"hot_connections={size!r} must be at least 1")
        self._engine = engine
        self._static = isinstance(engine.pool, sa.StaticPool)
        self.size = 1 if self._static else size
        self._prepare = prepare
        self._returned = returned
        self._timeout = timeout
        self._idle: list[HotConnection] = []
        self._every: list[HotConnection] = []
        self._lock = threading.Lock()
        # threads waiting for a connection, oldest first (handed ``None``: a place to open one)
        self._waiters: deque[Waiter[HotConnection | None]] = deque()
        self._keep: Any = None  # the in-memory database's one connection, kept checked out
        self.open = 0

    @property
    def waiting(self) -> int:
        """How many threads wait for a connection now."""
        with self._lock:
            return len(self._waiters)

    @contextmanager
    def connection(self) -> Iterator[HotConnection]:
        """A connection for one transaction; back to the pool after (dropped if broken)."""
        hot = self.take()
        try:
            yield hot
        finally:
            self.give_back(hot)

    def take(self) -> HotConnection:
        """A connection for one transaction (:meth:`connection` without the context manager).

        Every one taken is handed to :meth:`give_back` once its transaction is over.
        Threads that find every connection busy are served in the order they came.
        """
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self.open < self.size:
                self.open += 1
            else:
                waiter: Waiter[HotConnection | None] = Waiter(self._lock)
                self._waiters.append(waiter)
                try:
                    if not waiter.wait(time.monotonic() + self._timeout):
                        raise StoreError(
                            f"all {self.size} hot-path database connections stayed busy for "
                            f"{self._timeout:g}s; raise the hot_connections setting, or run "
                            "fewer threads per process"
                        )
                except BaseException:  # timed out, or interrupted (Ctrl-C in the main thread)
                    self._left(waiter)
                    raise
                if waiter.item is not None:
                    return waiter.item
                # handed a free place (a broken connection was dropped): open one in it
        try:
            return self._connect()
        except BaseException:
            with self._lock:
                self._free_places(1)
            raise

    def _connect(self) -> HotConnection:
        fairy = self._engine.raw_connection()
        if self._static:
            self._keep = fairy  # the one shared in-memory database: never give it back
        else:
            fairy.detach()  # ours to manage: SQLAlchemy's pool stays for everything else
        raw = fairy.dbapi_connection
        if self._prepare is not None:
            self._prepare(raw)
        hot = HotConnection(raw)
        with self._lock:
            self._every.append(hot)
        return hot

    def give_back(self, hot: HotConnection) -> None:
        """Return a connection :meth:`take` gave (dropped, with the idle ones, if broken)."""
        if self._returned is not None:
            self._returned(hot.raw)
        dropped: list[HotConnection] = []
        with self._lock:
            if hot.broken and not self._static:
                # what killed this one (a server restart, every backend terminated) most
                # likely killed the idle ones too: drop them, so a retry opens a fresh one
                dropped = [hot, *self._idle]
                self._idle = []
                for gone in dropped:
                    self._every.remove(gone)
                self._free_places(len(dropped))
            elif self._waiters:
                self._waiters.popleft().serve(hot)  # the longest waiting thread has it
            else:
                self._idle.append(hot)
        for gone in dropped:
            with suppress(Exception):
                gone.raw.close()

    def _left(self, waiter: Waiter[HotConnection | None]) -> None:
        """``waiter`` stopped waiting: out of the line, or what it was handed passed on."""
        if not waiter.served:
            self._waiters.remove(waiter)
        elif waiter.item is None:
            self._free_places(1)  # the free place it was handed goes to the next
        elif self._waiters:
            self._waiters.popleft().serve(waiter.item)
        else:
            self._idle.append(waiter.item)

    def _free_places(self, count: int) -> None:
        """``count`` connections are gone: waiting threads may open new ones in their place."""
        for _ in range(count):
            if self._waiters:
                self._waiters.popleft().serve(None)  # stays counted in ``open``: theirs now
            else:
                self.open -= 1

    def close(self) -> None:
        """Close every connection (those in use are closed too: call it last)."""
        with self._lock:
            every, self._every, self._idle = self._every, [], []
            self.open = 0
        if not self._static:
            for hot in every:
                with suppress(Exception):
                    hot.raw.close()
