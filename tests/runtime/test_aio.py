"""The asyncio engine: the same promises as the sync one, with sync and async steps."""

from __future__ import annotations

import asyncio

import pytest
import sagas
from sagas import Fatal, Linear, Order, Progress, Receipt, journal

from statesaga import AsyncEngine, EntityBusy, EventNotAllowed, InputError, Status


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


def test_sync_and_async_steps_run_under_the_async_engine(db: str) -> None:
    async def main() -> None:
        async with AsyncEngine(db) as engine:
            run = await engine.start(Linear, Order("a-1"), key="order:a-1")
            assert run.status is Status.COMPLETED
            assert run.output == Receipt("a-1", 3)
            assert run.data == Progress(["reserve", "charge", "ship"])
            assert [h.kind.value for h in engine.get(run.id).history] == [
                "start",
                "forward",
                "forward",
                "forward",
            ]

    asyncio.run(main())


def test_failure_compensates_in_reverse_under_the_async_engine(db: str) -> None:
    journal.fail["ship"] = -1
    journal.error["ship"] = Fatal

    async def main() -> None:
        async with AsyncEngine(db) as engine:
            run = await engine.start(Linear, Order("a-2"))
            assert run.status is Status.COMPENSATED

    asyncio.run(main())
    assert journal.names() == ["reserve", "charge", "ship", "undo_charge", "undo_reserve"]


def test_events_busy_keys_and_bad_input_under_the_async_engine(db: str) -> None:
    async def main() -> None:
        async with AsyncEngine(db) as engine:
            before = engine.store.dump()
            with pytest.raises(InputError):
                await engine.start(sagas.Waiting, {"order_id": 1, "amount": "x"})
            assert engine.store.dump() == before

            run = await engine.start(sagas.Waiting, Order("a-3"), key="order:a-3")
            assert run.status is Status.WAITING
            with pytest.raises(EntityBusy):
                await engine.start(sagas.Waiting, Order("a-3"), key="order:a-3")
            with pytest.raises(EventNotAllowed):
                await engine.send("nope", instance_id=run.id)
            done = await engine.send("confirmed", {"code": "ok"}, saga="waiting", key="order:a-3")
            assert done.run.status is Status.COMPLETED

    asyncio.run(main())


@pytest.mark.parametrize("asynchronous", [True, False], ids=["async step", "sync step"])
def test_a_step_past_its_timeout_is_abandoned_under_the_async_engine(
    db: str, asynchronous: bool
) -> None:
    async def main() -> None:
        async with AsyncEngine(db) as engine:
            run = await engine.start(sagas.Sleepy, sagas.Nap(0.3, asynchronous))
            assert run.status is Status.COMPENSATED
            assert run.error is not None
            assert run.error.type == "StepTimeout"

    asyncio.run(main())
    assert journal.names() == ["nap", "nap", "undo_nap"]


def test_many_runs_proceed_concurrently_on_one_loop(db: str) -> None:
    async def main() -> list[Status]:
        async with AsyncEngine(db) as engine:
            runs = await asyncio.gather(
                *(engine.start(Linear, Order(f"a-{n}"), key=f"order:a-{n}") for n in range(10))
            )
            return [run.status for run in runs]

    assert asyncio.run(main()) == [Status.COMPLETED] * 10


def test_recover_cancel_and_retry_under_the_async_engine(db: str) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    journal.fail["undo_reserve"] = -1

    async def main() -> None:
        async with AsyncEngine(db) as engine:
            failed = await engine.start(Linear, Order("a-20"))
            assert failed.status is Status.FAILED
            journal.fail["undo_reserve"] = 0
            assert (await engine.retry(failed.id)).status is Status.COMPENSATED

            waiting = await engine.start(sagas.Waiting, Order("a-21"))
            cancelled = await engine.cancel(waiting.id)
            assert cancelled.run.status is Status.COMPENSATED
            assert await engine.recover() == []

    asyncio.run(main())
