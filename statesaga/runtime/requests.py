"""What the drive loop asks of an engine, and the one backoff both engines sleep by.

The drive loop is written once, as generators that *yield* the things an
engine does differently (call a user function, pause, take an entity lock,
hold a transaction around a step) and receive the result. ``Engine`` pumps them with plain calls and
``time.sleep``; ``AsyncEngine`` awaits coroutines and ``asyncio.sleep``.

>>> delays = Backoff(give_up=1.0, cap=0.02)
>>> [round(delays.next(now=0.0), 3) for _ in range(4)]
[0.005, 0.01, 0.02, 0.02]
>>> delays.next(now=1.0) is None  # past ``give_up``: stop waiting
True
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from statesaga.context import StepContext

if TYPE_CHECKING:
    from statesaga.definition import Definition

__all__ = [
    "Backoff",
    "Call",
    "Driver",
    "Gather",
    "LockOp",
    "Pause",
    "Request",
    "Response",
    "SagaRef",
    "Transact",
]

SagaRef: TypeAlias = "type | Definition | str"


@attrs.frozen
class Call:
    """Request to the engine: call ``function(ctx)`` within ``timeout`` seconds.

    ``scope``, when given, is entered around the call where the function runs
    (its thread, its task): the step's span is current there.
    """

    function: Callable[..., Any]
    ctx: StepContext[Any, Any]
    timeout: float | None
    scope: Callable[[], AbstractContextManager[object]] | None = None


@attrs.frozen
class Pause:
    """Request to the engine: sleep ``seconds``."""

    seconds: float


@attrs.frozen
class LockOp:
    """Request to the engine: try to acquire a lease (the call is awaited if it is async)."""

    key: str


@attrs.frozen
class Gather:
    """Request to the engine: start ``calls`` concurrently, beside those it started for
    earlier ``Gather`` requests of the same drive and not yet answered.

    Answered with ``(name, Response)`` of the first call that ends (a call's name
    is the first item of its pair), or ``None`` if none ends within ``wait``
    seconds (``None``: wait as long as it takes). The engine runs them in a
    bounded pool of threads (``Engine``) or as tasks (``AsyncEngine``).
    """

    calls: tuple[tuple[str, Call], ...]
    wait: float | None = None


@attrs.frozen
class Transact:
    """Request to the engine: run ``body``, a plain function that holds a transaction.

    ``body(answer)`` opens a transaction, calls ``answer(call)`` for a transactional
    step inside it (a synchronous answer, as ``Engine`` gives) and commits; it returns
    what the drive goes on with, or raises. The engine runs it where waiting for a
    connection (or SQLite's write lock) and holding the transaction through the step
    hold up no other run: ``Engine`` in the calling thread, ``AsyncEngine`` on a
    worker thread, so that its event loop goes on committing the runs that hold the
    connections this one waits for.
    """

    body: Callable[[Callable[[Call], Response]], Any]


@attrs.frozen
class Response:
    """What a call gave: its value, or the exception it raised (``StepTimeout`` if too slow)."""

    value: Any = None
    error: BaseException | None = None


Request = Call | Pause | LockOp | Gather | Transact
Driver: TypeAlias = Generator[Request, Any, Any]


@attrs.define
class Backoff:
    """Exponential delays from 5 ms up to ``cap``, never past ``give_up`` (epoch seconds).

    ``next(now)`` is the delay to pause before trying again, or ``None``
    when ``now`` is past ``give_up`` and the caller should give up.
    """

    give_up: float
    cap: float = 0.25
    delay: float = 0.005

    def next(self, now: float) -> float | None:
        """The next pause, or ``None`` once ``give_up`` has passed."""
        if now >= self.give_up:
            return None
        pause = min(self.delay, self.give_up - now)
        self.delay = min(self.delay * 2, self.cap)
        return pause
