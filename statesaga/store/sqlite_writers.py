"""One SQLite writer at a time per process, queued on a lock instead of sleeping.

SQLite lets one connection write at a time. A second writer that finds the
lock taken is left to SQLite's busy handler, which sleeps and tries again:
1, 2, 5, 10 ... up to 100 ms between tries. Under contention a writer can
sleep through many commits of others, so tail latencies grow to seconds
while the database is idle most of that time.

Within one process statesaga queues its writers instead: every write
transaction on a store's database file (the hot path's and SQLAlchemy's
alike) first takes that file's :class:`Writers` lock, then ``BEGIN
IMMEDIATE``, and gives the lock back as soon as it commits or rolls back, so
the next writer starts the moment the last one ends. Other processes still
meet SQLite's busy handler; reads never take the lock (WAL readers do not
wait for writers).

A writer waits at most the store's ``busy_timeout`` for the lock, then fails
as SQLite would have (``SQLITE_BUSY``, "database is locked"): a thread that
writes while it already holds the write lock on another connection gets the
same error after the same wait as without the lock.

>>> writers = writers_for("/tmp/statesaga-doctest.db")
>>> writers is writers_for("/tmp/statesaga-doctest.db")
True
>>> writers.acquire(owner=1, timeout=1.0)
>>> writers.holder
1
>>> writers.release(owner=2)  # not the holder: nothing happens
>>> writers.release(owner=1)
>>> writers.holder is None
True
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import deque

__all__ = ["Writers", "busy_error", "writers_for"]


class Writers:
    """The write lock of one database file within this process, handed over in turn.

    Writers get the lock in the order they asked for it: a writer giving it
    back hands it to the longest waiting one, so a thread that writes again at
    once (the next transition of its run) queues behind the others instead of
    taking it back before they wake. The holder is a connection's identity, not
    a thread: a transaction may be committed by another thread than the one
    that began it.
    """

    __slots__ = ("_mutex", "_waiting", "holder")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[_Waiter] = deque()
        #: ``id()`` of the DBAPI connection whose transaction holds the lock, if any
        self.holder: int | None = None

    @property
    def waiting(self) -> int:
        """How many writers are queued for the lock now."""
        return len(self._waiting)

    def acquire(self, *, owner: int, timeout: float) -> None:
        """Wait for the lock for connection ``owner``; ``SQLITE_BUSY`` after ``timeout``."""
        with self._mutex:
            if self.holder is None and not self._waiting:
                self.holder = owner
                return
            waiter = _Waiter(owner)
            self._waiting.append(waiter)
        if waiter.handed.acquire(timeout=max(timeout, 0.0)):
            return  # the last holder made us the holder
        with self._mutex:
            if self.holder == owner and waiter not in self._waiting:
                return  # handed over just as the wait ran out
            self._waiting.remove(waiter)
        raise busy_error(timeout)

    def release(self, *, owner: int) -> None:
        """Give the lock back if connection ``owner`` holds it (else nothing)."""
        with self._mutex:
            if self.holder != owner:
                return
            if self._waiting:
                waiter = self._waiting.popleft()
                self.holder = waiter.owner
                waiter.handed.release()
            else:
                self.holder = None


class _Waiter:
    """A writer in the queue: its connection, and the lock released to hand it over."""

    __slots__ = ("handed", "owner")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.handed = threading.Lock()
        self.handed.acquire()


def busy_error(timeout: float) -> sqlite3.OperationalError:
    """The error SQLite raises when its busy timeout runs out, with its error code."""
    error = sqlite3.OperationalError(
        f"database is locked: another writer of this process held it for {timeout:g}s "
        "(the store's busy_timeout)"
    )
    error.sqlite_errorcode = 5
    error.sqlite_errorname = "SQLITE_BUSY"
    return error


_registry: dict[str, Writers] = {}
_registry_lock = threading.Lock()


def writers_for(path: str) -> Writers:
    """The one :class:`Writers` of database file ``path`` in this process."""
    key = os.path.realpath(path)
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            found = _registry[key] = Writers()
        return found


def _forget_in_child() -> None:
    # a forked child starts with no transaction of its own: fresh, unheld locks
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
