"""How the engines answer ``Gather``: calls run concurrently, answered as each ends.

``ThreadGather`` (``Engine``) runs them in a bounded pool of threads;
``TaskGather`` (``AsyncEngine``) as asyncio tasks, at most as many at once.
One lives for the length of one pumped operation; closing it stops waiting
for what still runs (a thread is left to finish, a task is cancelled).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from statesaga.runtime.requests import Call, Gather, Response

__all__ = ["BRANCH_THREADS", "MAX_BRANCH_CALLS", "TaskGather", "ThreadGather"]

#: the most branch steps one engine call runs at once (threads or tasks)
MAX_BRANCH_CALLS = 16
#: the name prefix of the threads that run branch steps
BRANCH_THREADS = "statesaga-branch"


class ThreadGather:
    """Answers ``Gather`` requests with a pool of at most ``limit`` threads."""

    def __init__(self, call: Callable[[Call], Response], limit: int = MAX_BRANCH_CALLS) -> None:
        self._call = call
        self._limit = limit
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[Future[Response], str] = {}

    def answer(self, request: Gather) -> tuple[str, Response] | None:
        """Start ``request``'s calls, then wait for the first of the running ones to end."""
        if request.calls and self._pool is None:
            self._pool = ThreadPoolExecutor(self._limit, thread_name_prefix=BRANCH_THREADS)
        for name, call in request.calls:
            assert self._pool is not None
            # the run's logging context goes along into the thread
            context = contextvars.copy_context()
            self._running[self._pool.submit(context.run, self._call, call)] = name
        done, _ = wait(list(self._running), timeout=request.wait, return_when=FIRST_COMPLETED)
        if not done:
            return None
        future = next(f for f in self._running if f in done)  # the oldest that ended
        name = self._running.pop(future)
        return name, future.result()  # a BaseException (a crash) is raised here

    def close(self) -> None:
        """Stop waiting: what still runs is left to finish in the background."""
        self._running.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class TaskGather:
    """Answers ``Gather`` requests with asyncio tasks, at most ``limit`` at once."""

    def __init__(
        self, call: Callable[[Call], Awaitable[Response]], limit: int = MAX_BRANCH_CALLS
    ) -> None:
        self._call = call
        self._slots = asyncio.Semaphore(limit)
        self._running: dict[asyncio.Task[Response], str] = {}

    async def _bounded(self, call: Call) -> Response:
        async with self._slots:
            return await self._call(call)

    async def answer(self, request: Gather) -> tuple[str, Response] | None:
        """Start ``request``'s calls, then wait for the first of the running ones to end."""
        for name, call in request.calls:
            self._running[asyncio.ensure_future(self._bounded(call))] = name
        done, _ = await asyncio.wait(
            list(self._running), timeout=request.wait, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            return None
        task = next(t for t in self._running if t in done)
        name = self._running.pop(task)
        return name, task.result()

    def close(self) -> None:
        """Stop waiting: the tasks that still run are cancelled."""
        for task in self._running:
            task.cancel()
        self._running.clear()
