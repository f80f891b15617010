"""The synchronous engine's driver loop: steps called in this thread, pauses slept.

``pump`` runs one of the runtime's operations (a start, a send, a recovered run)
to its end, answering each request the drive makes: a step call, a pause, an
entity lock, a fan-out of parallel branches. ``Engine`` and ``Worker`` use it;
the asynchronous engine has its own (:mod:`statesaga.aio`).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

from statesaga._step_threads import STEP_THREADS
from statesaga.errors import StepTimeout
from statesaga.runtime import Call, Driver, Gather, LockOp, Pause, Response, Runtime, Transact
from statesaga.runtime.gather import ThreadGather

__all__ = ["call", "pump"]


def pump(runtime: Runtime, driver: Driver) -> Any:
    """Run one of ``runtime``'s operations to its end in this thread; return its result.

    Steps are called here (``Call``), transactional ones inside the transaction
    that records them (``Transact``), pauses slept (``Pause``) and entity locks
    taken through the runtime's lock port (``LockOp``). ``Worker`` drives the
    runs ``runtime.recovery`` claims through this.
    """
    try_acquire = runtime.lock_port.try_acquire
    gather = ThreadGather(call)
    try:
        request = next(driver)
        while True:
            if isinstance(request, Gather):
                try:
                    answer = gather.answer(request)
                except BaseException:
                    driver.close()  # as for a call below: a crash unwinds the drive
                    raise
                request = driver.send(answer)
            elif isinstance(request, Pause):
                time.sleep(request.seconds)
                request = driver.send(None)
            elif isinstance(request, Transact):
                try:
                    done = request.body(call)
                except Exception as error:  # e.g. StoreError: raised where the drive asked
                    request = driver.throw(error)
                except BaseException:
                    driver.close()  # as for a call below
                    raise
                else:
                    request = driver.send(done)
            elif isinstance(request, LockOp):
                try:
                    lease = try_acquire(request.key)
                except Exception as error:  # e.g. LocksUnavailable: unwind the operation
                    request = driver.throw(error)
                else:
                    request = driver.send(lease)
            else:
                try:
                    response = call(request)
                except BaseException:
                    # the process is going down (Ctrl-C, SystemExit, a test's simulated
                    # crash): unwind the drive so that a step's open transaction rolls back
                    # now, as a dying process's would, instead of holding its locks
                    driver.close()
                    raise
                request = driver.send(response)
    except StopIteration as stop:
        return stop.value
    finally:
        gather.close()


def call(request: Call) -> Response:
    """Answer a step call in this thread (a sync step with a timeout on a step thread).

    An async step is run to its end in an event loop of its own.
    """
    if request.scope is not None:
        with request.scope():  # the step's span, current here (and in its thread, if any)
            return _answer(request)
    return _answer(request)


def _answer(request: Call) -> Response:
    started = time.monotonic()
    try:
        if _bounded_in_a_thread(request):
            value = _in_a_thread(request)
        else:
            value = request.function(request.ctx)
        if value is not None and inspect.isawaitable(value):
            value = asyncio.run(_bounded(value, request))
    except Exception as error:
        return Response(error=error)
    if request.timeout is not None and time.monotonic() - started > request.timeout:
        return Response(error=_timeout(request))
    return Response(value)


async def _bounded(awaitable: Any, request: Call) -> Any:
    try:
        return await asyncio.wait_for(awaitable, request.timeout)
    except TimeoutError:
        if request.timeout is None:
            raise
        raise _timeout(request) from None


def _bounded_in_a_thread(request: Call) -> bool:
    """A sync step with a timeout and no transaction of its own runs on another thread.

    The engine then stops waiting when the timeout passes, even if the call never
    returns (a hung connection). A transactional step runs in the calling thread,
    which owns its connection: it cannot be abandoned mid-transaction, so its
    late result is discarded and its writes rolled back instead.
    """
    return (
        request.timeout is not None
        and request.ctx.connection is None
        and not inspect.iscoroutinefunction(request.function)
    )


def _in_a_thread(request: Call) -> Any:
    """Call the step on one of the process's step threads; give up on it after its timeout.

    A step left running may still finish its work: that is what idempotency keys
    and ``undo_on_failure`` are for. Its result, or error, is dropped.
    """
    assert request.timeout is not None
    # named after the thread that runs the engine, so logs and debuggers tell them apart
    name = f"{threading.current_thread().name}/{request.ctx.step}:{request.ctx.instance_id[:8]}"
    job = STEP_THREADS.submit(request.function, request.ctx, name=name)
    if not job.finished(request.timeout):
        raise _timeout(
            request, "it was left running in the background and whatever it returns will be ignored"
        )
    return job.result()


def _timeout(request: Call, what: str = "its result was discarded") -> StepTimeout:
    return StepTimeout(
        f"{request.ctx.step} ran longer than its timeout of {request.timeout:g}s; {what}",
        step=request.ctx.step,
        timeout=request.timeout,
        instance_id=request.ctx.instance_id,
    )
