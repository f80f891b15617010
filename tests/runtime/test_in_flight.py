"""max_in_flight: an engine refuses new work before the leases of its runs would lapse.

At the bound a start is refused with ``EngineOverloaded`` before anything is
written, an event sent waits in the inbox, and a worker claims only what
fits; once a run in flight finishes, work is taken again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import attrs
import pytest

from statesaga import (
    ConcurrencyError,
    DeliveryStatus,
    Engine,
    EngineOverloaded,
    Saga,
    State,
    Status,
    StepContext,
)
from statesaga.aio import AsyncEngine
from statesaga.settings import Settings
from statesaga.worker import Worker


@attrs.frozen
class Ticket:
    number: int


@attrs.define
class Nothing:
    pass


class Gates:
    """An ``asyncio.Event`` per ticket the parked runs wait on, and who is inside."""

    def __init__(self) -> None:
        self.events: dict[int, asyncio.Event] = {}
        self.inside: set[int] = set()

    def open(self, number: int) -> None:
        self.events.setdefault(number, asyncio.Event()).set()


async def park(ctx: StepContext[Ticket, Nothing]) -> None:
    gates = ctx.resource(Gates)
    gates.inside.add(ctx.input.number)
    await gates.events.setdefault(ctx.input.number, asyncio.Event()).wait()


class Parked(Saga[Ticket, Nothing]):
    """Waits inside its only step until its gate opens."""

    name = "in-flight-parked"
    new = State(initial=True)
    done = State(final=True)
    work = new.to(done).run(park, read_only=True)


class Confirmed(Saga[Ticket, Nothing]):
    """Waits for ``confirmed``, then ends."""

    name = "in-flight-confirmed"
    waiting = State(initial=True)
    done = State(final=True)
    confirm = waiting.to(done).on("confirmed")


async def _until_inside(gates: Gates, *numbers: int) -> None:
    while not set(numbers) <= gates.inside:
        await asyncio.sleep(0.01)


def test_the_start_past_max_in_flight_is_refused_and_writes_nothing(db: str) -> None:
    async def scenario() -> None:
        gates = Gates()
        async with AsyncEngine(db, sagas=[Parked], resources=[gates], max_in_flight=2) as engine:
            first = asyncio.create_task(engine.start(Parked, Ticket(1)))
            second = asyncio.create_task(engine.start(Parked, Ticket(2)))
            await _until_inside(gates, 1, 2)
            with pytest.raises(EngineOverloaded) as refused:
                await engine.start(Parked, Ticket(3), key="ticket:3")
            error = refused.value
            assert isinstance(error, ConcurrencyError)
            assert (error.in_flight, error.limit, error.saga) == (2, 2, "in-flight-parked")
            assert "max_in_flight" in str(error)
            assert "retry later" in str(error).lower()
            assert len(engine.list(saga="in-flight-parked")) == 2  # nothing written
            assert engine.runtime.keeper.stats().in_flight == 2

            gates.open(1)
            assert (await first).status is Status.COMPLETED
            third = asyncio.create_task(engine.start(Parked, Ticket(3), key="ticket:3"))
            await _until_inside(gates, 3)  # accepted once a run finished
            gates.open(2)
            gates.open(3)
            assert {(await run).status for run in (second, third)} == {Status.COMPLETED}
            assert engine.runtime.keeper.stats().in_flight == 0

    asyncio.run(scenario())


def test_an_event_sent_to_a_full_engine_waits_in_the_inbox(db: str) -> None:
    async def scenario() -> None:
        gates = Gates()
        async with AsyncEngine(
            db, sagas=[Parked, Confirmed], resources=[gates], max_in_flight=1
        ) as engine:
            waiting = await engine.start(Confirmed, Ticket(0))
            assert waiting.status is Status.WAITING
            parked = asyncio.create_task(engine.start(Parked, Ticket(1)))
            await _until_inside(gates, 1)
            delivery = await engine.send("confirmed", instance_id=waiting.id)
            assert delivery.status is DeliveryStatus.PENDING  # recorded, not consumed
            assert engine.get(waiting.id).status is Status.WAITING
            gates.open(1)
            await parked
            [recovered] = await engine.recover()
            assert (recovered.id, recovered.status) == (waiting.id, Status.COMPLETED)

    asyncio.run(scenario())


# -- the worker -----------------------------------------------------------------------------------


class Blocker:
    """A threading gate for sync steps: who entered, and the event they wait on."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.go = threading.Event()


def wait_for_go(ctx: StepContext[Ticket, Nothing]) -> None:
    blocker = ctx.resource(Blocker)
    blocker.entered.release()
    blocker.go.wait(30)


class Later(Saga[Ticket, Nothing]):
    """Waits a minute (or for ``skipped``), then runs a step that blocks until told to go."""

    name = "in-flight-later"
    new = State(initial=True)
    waiting = State(timeout=60)
    done = State(final=True)
    wait = new.to(waiting)
    go = waiting.to(done).on_timeout().run(wait_for_go, read_only=True)
    skip = waiting.to(done).on("skipped")


def test_a_worker_claims_no_more_runs_than_max_in_flight(db: str) -> None:
    clock = [1_000.0]
    blocker = Blocker()
    with Engine(
        db, sagas=[Later], clock=lambda: clock[0], resources=[blocker], max_in_flight=2
    ) as engine:
        ids = [engine.start(Later, Ticket(n)).id for n in range(5)]
        clock[0] += 120  # every wait has timed out: five runs are due
        stop = threading.Event()
        worker = Worker(engine, concurrency=3, poll_interval=0.02, batch=10)
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            assert blocker.entered.acquire(timeout=30)  # one run is inside its step
            # the other threads poll meanwhile; none may claim past the bound
            for _ in range(10):
                stop.wait(0.02)
                leased = [i for i in ids if engine.store.get(i).lease_owner == engine.owner]  # type: ignore[union-attr]
                assert len(leased) <= 2
                assert engine.runtime.keeper.stats().in_flight <= 2
            blocker.go.set()
            deadline = time.monotonic() + 30
            while worker.stats.runs < len(ids):
                assert time.monotonic() < deadline, "the worker did not drive every run"
                stop.wait(0.02)
        finally:
            blocker.go.set()
            stop.set()
            thread.join(30)
        assert {engine.get(i).status for i in ids} == {Status.COMPLETED}
        assert engine.runtime.keeper.stats().in_flight == 0


# -- configuration --------------------------------------------------------------------------------


def test_max_in_flight_comes_from_settings_and_must_be_positive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings = Settings.load(environ={"STATESAGA_MAX_IN_FLIGHT": "500"}, cwd=tmp_path)
    assert settings.max_in_flight == 500
    assert Settings.load(environ={}, cwd=tmp_path).max_in_flight == 100_000
    assert Settings.load(environ={}, cwd=tmp_path, max_in_flight="none").max_in_flight is None
    with Engine.from_settings(settings, database_url=url) as engine:
        assert engine.runtime.keeper.stats().max_in_flight == 500
    with pytest.raises(ValueError, match="max_in_flight"):
        Engine(url, max_in_flight=0)
