"""``AsyncEngine``: the asyncio runtime, the same semantics as ``Engine``.

Async steps are awaited on the running loop (a timeout cancels them); sync
steps run in a worker thread so they do not block the loop. Store and lock
operations are short transactions made directly from the loop. A transactional
step's transaction (waiting for its connection, the step, the commit) runs
whole on a worker thread, an async step in an event loop of that thread's own:
more of them at once than pooled connections wait there, never on the loop.

>>> import asyncio, attrs
>>> from statesaga import AsyncEngine, Saga, State
>>> @attrs.define
... class In:
...     n: int
>>> @attrs.define
... class Data:
...     doubled: int = 0
>>> async def double(ctx):
...     return Data(ctx.input.n * 2)
>>> class Double(Saga[In, Data]):
...     name = "double"
...     new = State(initial=True)
...     done = State(final=True)
...     work = new.to(done).run(double, read_only=True)
>>> async def main():
...     async with AsyncEngine("sqlite://") as engine:
...         run = await engine.start(Double, In(21))
...         return run.status.value, run.data.doubled
>>> asyncio.run(main())
('completed', 42)
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from statesaga._pump import call as call_here
from statesaga._typed_reads import EngineReads
from statesaga.core import RetryRequested, Status, resolve_request
from statesaga.delivery import Delivery
from statesaga.dsl import Event, event_name
from statesaga.errors import ConcurrencyError, SagaNotRegistered, StepTimeout
from statesaga.run import Run
from statesaga.runtime import (
    RECOVERY_BATCH,
    Call,
    Driver,
    Gather,
    LockOp,
    Pause,
    Response,
    SagaRef,
    Transact,
    log,
)
from statesaga.runtime.gather import TaskGather
from statesaga.runtime.locking import AsyncLockPort

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from statesaga.definition import Definition
    from statesaga.dsl import Saga
    from statesaga.migration import MigrationReport

    I = TypeVar("I")  # noqa: E741 - the saga's input type, as in Saga[I, D, O]
    D = TypeVar("D")
    O = TypeVar("O")  # noqa: E741
    P = TypeVar("P")

__all__ = ["AsyncEngine"]


class AsyncEngine(EngineReads):
    """The asyncio engine; takes the same arguments as :class:`~statesaga.Engine`."""

    _asynchronous = True

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def _pump(self, driver: Driver) -> Any:
        port = self.runtime.lock_port
        assert isinstance(port, AsyncLockPort)
        try_acquire = port.try_acquire
        gather = TaskGather(_call)
        try:
            request = next(driver)
            while True:
                if isinstance(request, Gather):
                    try:
                        answer = await gather.answer(request)
                    except BaseException:
                        driver.close()
                        raise
                    request = driver.send(answer)
                elif isinstance(request, Pause):
                    await asyncio.sleep(request.seconds)
                    request = driver.send(None)
                elif isinstance(request, Transact):
                    # off the loop: waiting for a pooled connection (or SQLite's write
                    # lock) must not stop the loop committing the runs that hold them
                    abandoned = threading.Event()
                    try:
                        done = await asyncio.to_thread(request.body, _Unless(abandoned))
                    except Exception as error:
                        request = driver.throw(error)
                    except BaseException:
                        abandoned.set()  # the step's transaction rolls back when it returns
                        driver.close()
                        raise
                    else:
                        request = driver.send(done)
                elif isinstance(request, LockOp):
                    try:
                        lease = await try_acquire(request.key)
                    except Exception as error:  # e.g. LocksUnavailable: unwind the operation
                        request = driver.throw(error)
                    else:
                        request = driver.send(lease)
                else:
                    try:
                        response = await _call(request)
                    except BaseException:
                        # cancelled or going down: unwind the drive so that a step's open
                        # transaction rolls back now instead of holding its locks
                        driver.close()
                        raise
                    request = driver.send(response)
        except StopIteration as stop:
            return stop.value
        finally:
            gather.close()

    @overload
    async def start(
        self,
        saga: type[Saga[I, D, O]],
        input: I | Mapping[str, Any],
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[I, D, O]: ...

    @overload
    async def start(
        self,
        saga: Definition | str,
        input: Any,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[Any, Any, Any]: ...

    async def start(
        self,
        saga: SagaRef,
        input: Any,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[Any, Any, Any]:
        """Start a run and drive it until it waits or ends (see ``Engine.start``).

        Given the Saga class, the result is a ``Run[I, D, O]`` of its types.
        """
        return await self._pump(  # type: ignore[no-any-return]
            self.runtime.start(
                saga,
                input,
                key=key,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                deadline=deadline,
                wait=wait,
            )
        )

    @overload
    async def send(
        self,
        event: Event[P],
        payload: P | Mapping[str, Any] | None = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery: ...

    @overload
    async def send(
        self,
        event: str,
        payload: Any = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery: ...

    async def send(
        self,
        event: str | Event[Any],
        payload: Any = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery:
        """Send ``event`` (with its payload) to a run: recorded first, then consumed.

        The event is written to the run's durable inbox in one short
        transaction, deduplicated by ``event_id`` (pass the webhook's or
        message's id; a second send with the same id returns the first one's
        delivery with ``duplicate=True``). If the run is free, this call then
        consumes it and drives the run on; if the run is busy (its lock held,
        a step running) the event stays ``pending`` and whoever holds the run,
        or a worker, takes it: a race is never an error to the sender.

        An event is judged by when it was received. One the run waits for is
        accepted if it came before the wait's timeout and the deadline; one
        that a state the run can still reach takes is kept until then (unless
        the saga sets ``refuse_early_events``); otherwise it is ``rejected``,
        recorded in the inbox and the history with the reason.

        ``event`` is the event's name, or the ``Event[Payload]`` declared on the
        saga class (then mypy checks the payload's type).

        Address the run by ``instance_id``, or by ``saga`` and entity ``key``.
        An event the saga does not declare raises ``EventNotAllowed``; a payload
        that does not fit its declared type raises ``InputError``; an unknown run
        raises ``InstanceNotFound``; none of them writes anything.

        Args:
            wait: seconds to wait for a busy run before leaving the event pending.
        """
        target = self.runtime.reads.find_id(instance_id, saga, key)
        return await self._pump(  # type: ignore[no-any-return]
            self.runtime.inbox.send(target, "event", event_name(event), payload, event_id, wait)
        )

    async def cancel(
        self,
        instance_id: str,
        *,
        reason: str = "cancelled",
        details: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery:
        """Ask a run to stop and compensate what it did, in reverse.

        Recorded in the run's inbox like an event (deduplicated by ``event_id``)
        and applied as soon as the run can take it: at once if it is free,
        otherwise by its holder before its next retry or wait, or by a worker.
        A run that has ended, is compensating, or whose pivot took effect (or
        may have) cannot be cancelled: the delivery is ``rejected`` with the
        reason.

        The run's error is then of kind ``ErrorKind.CANCELLED``, with ``reason``
        as its message and ``details`` (JSON values, see :mod:`statesaga.failures`)
        as its details: what code reads to tell one cancel from another.
        """
        return await self._pump(  # type: ignore[no-any-return]
            self.runtime.inbox.cancel(instance_id, reason, details, event_id, wait)
        )

    async def retry(self, instance_id: str, *, wait: float = 0.0) -> Run:
        """Try a ``failed`` run again (see ``Engine.retry``)."""
        return await self._pump(self.runtime.operate(instance_id, RetryRequested(), wait, "retry"))  # type: ignore[no-any-return]

    async def resolve(
        self,
        instance_id: str,
        *,
        outcome: Status | str,
        note: str,
        by: str | None = None,
        wait: float = 0.0,
    ) -> Run:
        """End a ``failed`` run as ``compensated`` or ``completed`` after a repair by hand.

        One transition under the entity lock and the version/epoch check; nothing
        runs or is compensated. The run stays in its state; a ``resolved`` history
        entry keeps ``note`` and ``by``; its entity key is free again.

        Example::

            run = await engine.resolve(run_id, outcome="compensated",
                                 note="refunded payment pi_42 by hand", by="alice")

        Raises:
            ResolveNotAllowed: the run is not ``failed``, ``outcome`` is not
                compensated or completed, or ``note`` is empty; nothing is written.
        """
        request = resolve_request(outcome, note, by)
        return await self._pump(self.runtime.operate(instance_id, request, wait))  # type: ignore[no-any-return]

    async def fork(
        self,
        instance_id: str,
        *,
        from_step: str,
        note: str | None = None,
        by: str | None = None,
        wait: float = 0.0,
    ) -> Run:
        """Restart a run from one of its steps as a new run; drive it until it waits or ends.

        Same saga version, input and correlation id; it starts in ``from_step``'s
        source state with the original's latest context (the history keeps no
        context per step), and compensates only the steps it runs. Both histories
        link the runs (``forked_from``, ``forked_to``). See docs/operations.md.

        Example::

            fork = await engine.fork(run_id, from_step="authorize", note="card fixed")

        Raises:
            ForkNotAllowed: the original still holds its entity key (it is open), it
                never took ``from_step``, a pivot took effect at or after that step,
                or a step before it was compensated; nothing is written.
            EntityBusy: another run now holds the entity key.
        """
        return await self._pump(  # type: ignore[no-any-return]
            self.runtime.forks.fork(instance_id, from_step, note=note, by=by, wait=wait)
        )

    async def resume(self, instance_id: str, *, wait: float = 0.0) -> Run:
        """Claim a run and drive it from its last persisted transition."""
        return await self._pump(self.runtime.operate(instance_id, None, wait))  # type: ignore[no-any-return]

    async def migrate(
        self,
        saga: SagaRef,
        *,
        from_version: int,
        to_version: int | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> MigrationReport:
        """Move the waiting and due runs of an older version onto a newer one
        (see ``Engine.migrate``)."""
        return self.runtime.migrations.migrate(
            saga, from_version=from_version, to_version=to_version, dry_run=dry_run, limit=limit
        )

    async def recover(self, *, limit: int = 1000) -> builtins.list[Run]:
        """Resume every run that needs it (see ``Engine.recover``)."""
        recovery = self.runtime.recovery
        results: builtins.list[Run] = []
        seen: set[str] = set()
        while len(results) < limit:
            batch = recovery.claim_due(min(RECOVERY_BATCH, limit - len(results)))
            # a run driven once in this call and due again at once (it waits for an event
            # that is not yet its turn) is left for the next call, so this one ends
            again = [row for row in batch if row.id in seen]
            recovery.let_go(again)
            batch = [row for row in batch if row.id not in seen]
            if not batch:
                break
            for row in batch:
                seen.add(row.id)
                try:
                    results.append(await self._pump(recovery.recover(row)))
                except ConcurrencyError:
                    continue  # another engine took it over meanwhile
                except SagaNotRegistered as error:
                    log.warning("not recovering %s: %s", row.id, error)
        return results


class _Abandoned(Exception):
    """The operation was cancelled while its step ran: roll the step's transaction back."""


class _Unless:
    """Answers a transactional step on the transaction's thread, unless abandoned meanwhile."""

    __slots__ = ("abandoned",)

    def __init__(self, abandoned: threading.Event) -> None:
        self.abandoned = abandoned

    def __call__(self, request: Call) -> Response:
        response = call_here(request)
        if self.abandoned.is_set():
            raise _Abandoned(request.ctx.step)
        return response


async def _call(request: Call) -> Response:
    if request.scope is not None:
        with request.scope():  # the step's span, current in this task (and a thread's copy)
            return await _answer(request)
    return await _answer(request)


async def _answer(request: Call) -> Response:
    started = time.monotonic()
    function = request.function
    try:
        if inspect.iscoroutinefunction(function):
            value = await asyncio.wait_for(function(request.ctx), request.timeout)
        else:
            value = await asyncio.wait_for(
                asyncio.to_thread(function, request.ctx), request.timeout
            )
            if inspect.isawaitable(value):
                value = await asyncio.wait_for(value, request.timeout)
    except TimeoutError as error:
        if request.timeout is not None and time.monotonic() - started >= request.timeout:
            return Response(error=_timeout(request))
        return Response(error=error)
    except Exception as error:
        return Response(error=error)
    return Response(value)


def _timeout(request: Call) -> StepTimeout:
    return StepTimeout(
        f"{request.ctx.step} ran longer than its timeout of {request.timeout:g}s and was cancelled",
        step=request.ctx.step,
        timeout=request.timeout,
        instance_id=request.ctx.instance_id,
    )
