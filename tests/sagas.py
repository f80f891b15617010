"""Small sagas the runtime tests drive, with hooks to make their steps misbehave.

Every step appends to ``Journal.calls`` so tests can see what ran, in which
order, with which idempotency key. ``Journal.fail`` maps a step name to the
number of times it should still fail (``-1``: always), and with which error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga import NonRetryableError, Retry, Saga, State, StepContext

FAST = Retry(attempts=3, initial_interval=0.001, backoff=1, jitter=0)
FAST_UNDO = Retry(attempts=5, initial_interval=0.001, backoff=1, jitter=0)

effects = sa.Table(
    "test_effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(64)),
    sa.Column("step", sa.String(50)),
)


class Boom(Exception):
    """A retryable failure."""


class Fatal(NonRetryableError):
    """A business failure: no retries."""


@attrs.define
class Journal:
    calls: list[tuple[str, str]] = attrs.Factory(list)
    fail: dict[str, int] = attrs.Factory(dict)
    error: dict[str, type[Exception]] = attrs.Factory(dict)
    hooks: dict[str, Callable[[StepContext[Any, Any]], None]] = attrs.Factory(dict)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def hit(self, name: str, ctx: StepContext[Any, Any]) -> None:
        with self.lock:
            self.calls.append((name, ctx.idempotency_key))
        hook = self.hooks.get(name)
        if hook is not None:
            hook(ctx)
        left = self.fail.get(name, 0)
        if left:
            self.fail[name] = left - 1 if left > 0 else left
            raise self.error.get(name, Boom)(f"{name} failed")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def reset(self) -> None:
        """Forget every call, planned failure and hook (before each test)."""
        with self.lock:
            self.calls.clear()
        self.fail.clear()
        self.error.clear()
        self.hooks.clear()


journal = Journal()


@attrs.define
class Order:
    order_id: str
    amount: int = 100


@attrs.define
class Progress:
    done: list[str] = attrs.Factory(list)


@attrs.define
class Receipt:
    order_id: str
    steps: int


@attrs.define
class Confirmation:
    code: str


def step(name: str) -> Callable[[StepContext[Order, Progress]], Progress]:
    def run(ctx: StepContext[Order, Progress]) -> Progress:
        journal.hit(name, ctx)
        return Progress([*ctx.data.done, name])

    run.__name__ = run.__qualname__ = name
    return run


def async_step(name: str) -> Callable[[StepContext[Order, Progress]], Any]:
    async def run(ctx: StepContext[Order, Progress]) -> Progress:
        await asyncio.sleep(0)
        journal.hit(name, ctx)
        return Progress([*ctx.data.done, name])

    run.__name__ = run.__qualname__ = name
    return run


def undo(name: str) -> Callable[[StepContext[Order, Progress]], None]:
    def run(ctx: StepContext[Order, Progress]) -> None:
        journal.hit(f"undo_{name}", ctx)

    run.__name__ = run.__qualname__ = f"undo_{name}"
    return run


def write_effect(ctx: StepContext[Order, Progress]) -> Progress:
    """A step whose database write commits with its transition."""
    ctx.connection.execute(effects.insert().values(instance_id=ctx.instance_id, step="reserve"))
    journal.hit("reserve", ctx)
    return Progress([*ctx.data.done, "reserve"])


def remove_effect(ctx: StepContext[Order, Progress]) -> None:
    """Its compensation: deletes the row through the compensating transition's transaction."""
    ctx.connection.execute(effects.delete().where(effects.c.instance_id == ctx.instance_id))
    journal.hit("undo_reserve", ctx)


class Linear(Saga[Order, Progress]):
    """reserve → charge → ship, each undoable; output a receipt."""

    name = "linear"
    new = State(initial=True)
    reserved = State()
    charged = State()
    shipped = State(final=True)

    reserve = new.to(reserved).run(
        step("reserve"), undo=undo("reserve"), retry=FAST, undo_retry=FAST_UNDO
    )
    charge = reserved.to(charged).run(
        async_step("charge"), undo=undo("charge"), retry=FAST, undo_retry=FAST_UNDO
    )
    ship = charged.to(shipped).run(
        step("ship"), undo=undo("ship"), retry=FAST, undo_retry=FAST_UNDO
    )

    @staticmethod
    def output(order: Order, data: Progress) -> Receipt:
        return Receipt(order.order_id, len(data.done))


class Transactional(Saga[Order, Progress]):
    """reserve writes a row in the transition's transaction; charge may fail."""

    name = "transactional"
    new = State(initial=True)
    reserved = State()
    done = State(final=True)

    reserve = new.to(reserved).run(write_effect, undo=remove_effect, transactional=True, retry=FAST)
    charge = reserved.to(done).run(
        step("charge"), undo=undo("charge"), retry=FAST, undo_retry=FAST_UNDO
    )


class TransactionalFirst(Saga[Order, Progress]):
    """reserve writes a row in the transaction that also inserts the run; then wait for ``go``."""

    name = "transactional-first"
    new = State(initial=True)
    reserved = State(timeout=600)
    done = State(final=True)

    reserve = new.to(reserved).run(write_effect, undo=remove_effect, transactional=True)
    proceed = reserved.to(done).on("go")


class Pivoted(Saga[Order, Progress]):
    """reserve (undoable) → capture (pivot) → notify (forward only)."""

    name = "pivoted"
    new = State(initial=True)
    reserved = State()
    captured = State()
    notified = State(final=True)

    reserve = new.to(reserved).run(
        step("reserve"), undo=undo("reserve"), retry=FAST, undo_retry=FAST_UNDO
    )
    capture = reserved.to(captured).run(step("capture"), pivot=True, retry=FAST)
    notify = captured.to(notified).run(step("notify"), retry=FAST)


class Waiting(Saga[Order, Progress]):
    """reserve, then wait (60 s at most) for ``confirmed`` with a typed payload."""

    name = "waiting"
    deadline = 3600
    new = State(initial=True)
    reserved = State()
    awaiting = State(timeout=60)
    done = State(final=True)

    reserve = new.to(reserved).run(
        step("reserve"), undo=undo("reserve"), retry=FAST, undo_retry=FAST_UNDO
    )
    ask = reserved.to(awaiting)
    confirm = (
        awaiting.to(done)
        .on("confirmed", payload=Confirmation)
        .run(step("confirm"), read_only=True, retry=FAST)
    )


@attrs.define
class Nap:
    seconds: float
    asynchronous: bool = True


@attrs.define
class Naps:
    finished: int = 0


async def nap_async(ctx: StepContext[Nap, Naps]) -> Naps:
    journal.hit("nap", ctx)
    await asyncio.sleep(ctx.input.seconds)
    return Naps(ctx.data.finished + 1)


def nap_sync(ctx: StepContext[Nap, Naps]) -> Naps:
    import time

    journal.hit("nap", ctx)
    time.sleep(ctx.input.seconds)
    return Naps(ctx.data.finished + 1)


def nap(ctx: StepContext[Nap, Naps]) -> Any:
    return nap_async(ctx) if ctx.input.asynchronous else nap_sync(ctx)


def wake(ctx: StepContext[Nap, Naps]) -> None:
    journal.hit("undo_nap", ctx)


class Sleepy(Saga[Nap, Naps]):
    """One step with a 50 ms timeout, retried twice, undone on failure."""

    name = "sleepy"
    new = State(initial=True)
    done = State(final=True)

    nap = new.to(done).run(
        nap,
        undo=wake,
        undo_on_failure=True,
        timeout=0.05,
        retry=Retry(attempts=2, initial_interval=0.001, jitter=0),
        undo_retry=FAST_UNDO,
    )


def is_big(ctx: StepContext[Order, Progress]) -> bool:
    if ctx.input.amount < 0:
        raise ValueError(f"amount {ctx.input.amount} is negative")
    return ctx.input.amount > 1000


class Branchy(Saga[Order, Progress]):
    """reserve, then a guard picks the big or the small route (and may raise)."""

    name = "branchy"
    new = State(initial=True)
    reserved = State()
    big_done = State(final=True)
    small_done = State(final=True)

    reserve = new.to(reserved).run(
        step("reserve"), undo=undo("reserve"), retry=FAST, undo_retry=FAST_UNDO
    )
    big = reserved.to(big_done).when(is_big)
    small = reserved.to(small_done)


class Undeclared(Saga[Order, Progress]):
    """reserve, then charge with no retry policy of its own (the engine's default applies)."""

    name = "undeclared"
    new = State(initial=True)
    reserved = State()
    charged = State(final=True)

    reserve = new.to(reserved).run(
        step("reserve"), undo=undo("reserve"), retry=FAST, undo_retry=FAST_UNDO
    )
    charge = reserved.to(charged).run(step("charge"))
