"""A connection pool that serves waiting threads in the order they came.

SQLAlchemy's ``QueuePool`` wakes one waiter when a connection comes back, but
a thread that arrives meanwhile may take the connection first; the woken one
then waits again, at the back of the line. With more threads than
connections (64 checkouts in flight on a pool of 20), a few threads lose that
race again and again: a checkout's p99 was seconds while its median was
milliseconds. :class:`FairQueuePool` is ``QueuePool`` with one change: a
connection given back while threads wait goes to the longest waiting one,
and a thread that arrives while others wait queues behind them.

>>> import sqlalchemy as sa
>>> engine = sa.create_engine("sqlite://", poolclass=FairQueuePool, pool_size=1, max_overflow=0)
>>> with engine.connect() as connection:
...     connection.exec_driver_sql("SELECT 1").scalar()
1
>>> engine.pool.status().startswith("Pool size: 1")
True
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.util.queue import Empty, Full, QueueCommon

from statesaga.errors import StoreError

__all__ = ["FairQueue", "FairQueuePool", "Waiter"]

_T = TypeVar("_T")


class Waiter(Generic[_T]):
    """A thread in a waiting line: an item is handed to it, not left for anyone to take.

    Every method is called with ``lock`` (the line's) held.
    """

    __slots__ = ("item", "ready", "served")

    def __init__(self, lock: threading.Lock | threading.RLock) -> None:
        self.ready = threading.Condition(lock)
        self.served = False
        self.item: _T | None = None

    def serve(self, item: _T) -> None:
        """Hand ``item`` to this thread and wake it."""
        self.item, self.served = item, True
        self.ready.notify()

    def wait(self, deadline: float | None) -> bool:
        """Wait until served or ``deadline`` (``time.monotonic``) passes; whether served."""
        while not self.served:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.ready.wait(remaining)
        return True


class FairQueue(QueueCommon[_T]):
    """The pool's queue of idle connections, handing them to waiters first come, first served.

    >>> queue: FairQueue[str] = FairQueue(maxsize=2)
    >>> queue.put("a", False)
    >>> queue.get(False), queue.qsize()
    ('a', 0)
    >>> queue.get(True, 0.01)
    Traceback (most recent call last):
    ...
    sqlalchemy.util.queue.Empty
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self.mutex = threading.RLock()
        self._items: deque[_T] = deque()
        self._waiters: deque[Waiter[_T]] = deque()

    @property
    def waiting(self) -> int:
        """How many threads wait for an item now."""
        with self.mutex:
            return len(self._waiters)

    def empty(self) -> bool:
        with self.mutex:
            return not self._items

    def full(self) -> bool:
        with self.mutex:
            return self.maxsize > 0 and len(self._items) >= self.maxsize

    def qsize(self) -> int:
        with self.mutex:
            return len(self._items)

    def put_nowait(self, item: _T) -> None:
        self.put(item, False)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        """Hand ``item`` to the longest waiting thread, or keep it (``Full`` if no room).

        The pool only puts without blocking: a connection that finds no room is
        closed by the pool (it was an overflow connection).
        """
        with self.mutex:
            if self._waiters:
                self._waiters.popleft().serve(item)
                return
            if self.maxsize > 0 and len(self._items) >= self.maxsize:
                raise Full
            self._items.append(item)

    def get_nowait(self) -> _T:
        return self.get(False)

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """An idle item, or (``block``) the next one given back, in the order threads asked.

        Raises ``Empty`` when there is none and ``block`` is false, or none came
        within ``timeout`` seconds.
        """
        with self.mutex:
            if self._items:  # none waits while one is idle: a put serves waiters first
                return self._items.pop() if self.use_lifo else self._items.popleft()
            if not block:
                raise Empty
            if timeout is not None and timeout < 0:
                raise ValueError("'timeout' must be a positive number")
            waiter: Waiter[_T] = Waiter(self.mutex)
            self._waiters.append(waiter)
            try:
                if not waiter.wait(None if timeout is None else time.monotonic() + timeout):
                    raise Empty
            except BaseException:  # timed out, or interrupted (Ctrl-C in the main thread)
                if waiter.served:  # handed one meanwhile: pass it on, never lose it
                    assert waiter.item is not None
                    try:
                        self.put(waiter.item, False)
                    except Full:  # kept idle one over the size; the pool closes extras later
                        self._items.append(waiter.item)
                else:
                    self._waiters.remove(waiter)
                raise
            item = waiter.item
            assert item is not None
            return item


class FairQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool``, its waiting threads served in the order they came.

    Everything else (``pool_size``, ``max_overflow``, ``timeout``, pre-ping,
    events) is ``QueuePool``'s, except that a thread that waited out the
    timeout gets a ``StoreError`` naming the settings to raise.
    """

    _queue_class: type[QueueCommon[ConnectionPoolEntry]] = FairQueue

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError as error:
            raise StoreError(
                f"all {self.size() + max(self._max_overflow, 0)} pooled database connections "
                f"stayed busy for {self._timeout:g}s; raise the pool_size (or max_overflow) "
                f"setting, or run fewer threads per process ({error})"
            ) from error
