"""Threads that run sync steps with a timeout, reused from one call to the next.

``Engine`` runs a sync step that has a ``timeout`` (and no transaction of its
own) in another thread, so that it can stop waiting when the timeout passes
even if the call never returns. Starting a thread for every call costs more
than many steps do; these threads stay and take the next call instead.

A call that overruns keeps its thread busy for as long as it runs: the next
call finds no idle thread and starts another, so a hung call never holds up
another one. A thread idle for ``idle_seconds`` ends. All are daemon
threads: a call left running never keeps the process alive.

>>> threads = StepThreads()
>>> job = threads.submit(len, "shop", name="demo")
>>> job.finished(timeout=5), job.result()
(True, 4)
"""

from __future__ import annotations

import contextvars
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["STEP_THREADS", "Job", "StepThreads"]


class Job:
    """One call handed to a step thread: wait for it with ``finished``, then take ``result``."""

    __slots__ = ("_argument", "_context", "_done", "_error", "_function", "_value", "name")

    def __init__(self, function: Callable[[Any], Any], argument: Any, name: str) -> None:
        self._function = function
        self._argument = argument
        # the caller's context vars (the run's logging context, the step's span) go along
        self._context = contextvars.copy_context()
        self.name = name
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()  # released once the call has returned or raised

    def finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the call; ``False`` if it is still running."""
        if self._done.acquire(timeout=timeout):
            self._done.release()
            return True
        return False

    def result(self) -> Any:
        """What the finished call returned; what it raised is raised here."""
        if self._error is not None:
            raise self._error
        return self._value

    def _run(self) -> None:
        try:
            self._value = self._context.run(self._function, self._argument)
        except BaseException as error:  # re-raised in the caller's thread
            self._error = error


class StepThreads:
    """A growing set of daemon threads that run ``Job``\\ s, reused while they are idle.

    Args:
        idle_seconds: a thread with nothing to do for this long ends.
    """

    def __init__(self, *, idle_seconds: float = 60.0) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Job]] = []  # LIFO: the warmest thread first
        self._numbers = itertools.count(1)

    @property
    def idle(self) -> int:
        """How many threads wait for a call."""
        return len(self._idle)

    def submit(self, function: Callable[[Any], Any], argument: Any, *, name: str) -> Job:
        """Call ``function(argument)`` on an idle thread (or a new one), named ``name``."""
        job = Job(function, argument, name)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            number = next(self._numbers)
            thread = threading.Thread(
                target=self._serve, args=(inbox,), name=f"statesaga-step-{number}", daemon=True
            )
            inbox.put(job)
            thread.start()
        else:
            inbox.put(job)
        return job

    def _serve(self, inbox: queue.SimpleQueue[Job]) -> None:
        thread = threading.current_thread()
        idle_name = thread.name
        while True:
            try:
                job = inbox.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody is handing this thread a call: end
                        self._idle.remove(inbox)
                        return
                continue  # taken off the idle list just now: its call is on the way
            # named after the call (the engine's thread, the step, the run), for logs
            # and debuggers
            thread.name = job.name
            job._run()
            thread.name = idle_name
            with self._lock:
                # idle again before the caller hears of it, so that its next call reuses
                # this thread rather than start another
                self._idle.append(inbox)
            job._done.release()
            del job  # hold nothing of a finished call while idle

    def _forget(self) -> None:
        """After ``fork``: the parent's threads do not exist in the child."""
        self._lock = threading.Lock()
        self._idle = []


#: the process's step threads (``Engine`` and ``Worker`` share them)
STEP_THREADS = StepThreads()
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=STEP_THREADS._forget)
