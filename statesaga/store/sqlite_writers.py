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
the next writer starts the moment the last one ends. Reads never take the lock
(WAL readers do not wait for writers).

Between processes the holder of that lock also takes the file's turn: a
byte-range lock on a file beside the database (``<database>-statesaga-lock``),
taken through a gate lock, so that a process that has just written waits
behind one that was already waiting instead of taking the turn straight back.
A process waiting for the turn checks every half millisecond at most, where
SQLite's busy handler sleeps up to 100 ms between tries. A process that dies
gives its turn back with it (the system drops its locks). Writers that do not
use statesaga still meet SQLite's busy handler.

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

import errno
import logging
import os
import sqlite3
import threading
import time
from collections import deque

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no queue between processes
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileTurn", "Writers", "busy_error", "writers_for"]

log = logging.getLogger("statesaga.store")


class Writers:
    """The write lock of one database file within this process, handed over in turn.

    Writers get the lock in the order they asked for it: a writer giving it
    back hands it to the longest waiting one, so a thread that writes again at
    once (the next transition of its run) queues behind the others instead of
    taking it back before they wake. The holder is a connection's identity, not
    a thread: a transaction may be committed by another thread than the one
    that began it.
    """

    __slots__ = ("_mutex", "_waiting", "holder", "turn")

    def __init__(self, turn: FileTurn | None = None) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[_Waiter] = deque()
        #: ``id()`` of the DBAPI connection whose transaction holds the lock, if any
        self.holder: int | None = None
        #: the file's turn among processes, taken by the holder (``None``: this process only)
        self.turn = turn

    @property
    def waiting(self) -> int:
        """How many writers are queued for the lock now."""
        return len(self._waiting)

    def acquire(self, *, owner: int, timeout: float) -> None:
        """Wait for the lock for connection ``owner``; ``SQLITE_BUSY`` after ``timeout``.

        The wait covers both this process's queue and, once first in it, the
        file's turn among processes.
        """
        deadline = time.monotonic() + timeout
        self._acquire_here(owner, timeout)
        turn = self.turn
        if turn is None or turn.held:
            return  # (held: the last writer of this process handed it on with the lock)
        try:
            taken = turn.take(deadline)
        except BaseException:
            self._hand_on(owner)
            raise
        if not taken:
            self._hand_on(owner)
            raise busy_error(timeout, elsewhere=True)

    def _acquire_here(self, owner: int, timeout: float) -> None:
        """This process's part: first in its queue."""
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
            turn = self.turn
            if turn is not None and turn.held and not (self._waiting and turn.fresh()):
                turn.give_back()  # (else the next writer of this process goes on with it)
            self._hand_over()

    def _hand_on(self, owner: int) -> None:
        """``owner`` got this process's lock but not the file's turn: the next in line has it."""
        with self._mutex:
            if self.holder == owner:
                self._hand_over()

    def _hand_over(self) -> None:
        """To the longest waiting writer, or free (called holding ``_mutex``)."""
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


class FileTurn:
    """The write turn of one database file among this machine's processes.

    Two one-byte locks on a file beside the database: the *turn* (byte 1),
    held while a transaction writes, and the *gate* (byte 0), held only by a
    process waiting for the turn. A process takes the gate, then the turn,
    then lets the gate go; so when the turn is given back, the process that
    held the gate while waiting gets it next, and one that has just written
    waits at the gate behind it. Locks belong to the process (they are
    ``fcntl`` record locks): only one thread at a time uses them, the one
    first in its :class:`Writers` queue, and the system drops them if the
    process dies.

    A process whose next writer is already waiting for the lock hands the turn
    on to it with the lock, for up to ``SLICE`` seconds since the turn was
    taken: a waiting process comes in after at most that long (and the
    transaction then running), and the database does not sit idle between two
    writers of one process while a waiting process wakes.

    >>> import tempfile
    >>> turn = FileTurn(tempfile.mkdtemp() + "/shop.db")
    >>> turn.take(time.monotonic() + 1.0)
    True
    >>> turn.give_back()
    """

    GATE, TURN = 0, 1
    #: the longest pause between two tries while another process has the turn (seconds)
    MOST_PAUSE = 0.0005
    #: how long the writers of one process may hand the turn on among themselves (seconds)
    SLICE = 0.02

    __slots__ = ("_fd", "_unusable", "held", "path", "taken_at")

    def __init__(self, database: str) -> None:
        self.path = f"{database}-statesaga-lock"
        self._fd: int | None = None
        self._unusable = False
        #: whether this process has the turn now
        self.held = False
        #: when it took it (``time.monotonic()``)
        self.taken_at = 0.0

    def fresh(self) -> bool:
        """Whether the turn was taken less than ``SLICE`` ago (it may be handed on)."""
        return time.monotonic() - self.taken_at < self.SLICE

    def take(self, deadline: float) -> bool:
        """Wait until ``deadline`` (``time.monotonic()``) for the turn; ``False`` if not had."""
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            return True  # no file to queue on: SQLite's busy handler alone, as before
        if not _try_lock(fd, self.GATE, 2):  # (both free: both at once)
            if not self._lock(fd, self.GATE, deadline):
                return False
            try:
                if not self._lock(fd, self.TURN, deadline):
                    return False
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, self.GATE)
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, self.GATE)
        self.held, self.taken_at = True, time.monotonic()
        return True

    def give_back(self) -> None:
        """Let the next process have the turn (nothing if this process does not have it)."""
        if self.held and self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self.TURN)
        self.held = False

    def _open(self) -> int | None:
        if self._fd is None and not self._unusable:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                log.warning(
                    "cannot open %s (%s): writers in other processes meet SQLite's busy "
                    "handler instead of queueing",
                    self.path,
                    error,
                )
                self._unusable = True  # said once; SQLite's busy handler from now on
        return self._fd

    def _lock(self, fd: int, byte: int, deadline: float) -> bool:
        pause = 0.0001
        while not _try_lock(fd, byte, 1):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, self.MOST_PAUSE)
        return True


def _try_lock(fd: int, start: int, length: int) -> bool:
    """Lock ``length`` bytes from ``start`` of ``fd`` for this process, if no other has them."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def busy_error(timeout: float, *, elsewhere: bool = False) -> sqlite3.OperationalError:
    """The error SQLite raises when its busy timeout runs out, with its error code."""
    who = "a writer in another process" if elsewhere else "another writer of this process"
    error = sqlite3.OperationalError(
        f"database is locked: {who} held it for {timeout:g}s (the store's busy_timeout)"
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
            found = _registry[key] = Writers(FileTurn(key) if fcntl is not None else None)
        return found


def _forget_in_child() -> None:
    # a forked child starts with no transaction of its own: fresh, unheld locks
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
