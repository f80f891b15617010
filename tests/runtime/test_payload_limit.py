"""max_payload_bytes: a payload over the limit is a clear error where it is made.

A start or a send over the limit is refused before anything is written; a
step whose new context (or the run's output) is over it fails without
retrying, and the run compensates what it did.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs
import pytest

from statesaga import AsyncEngine, Engine, PayloadTooLarge, Saga, State, Status
from statesaga.dsl import Event
from statesaga.settings import Settings


@attrs.frozen
class Upload:
    name: str
    copies: int = 1


@attrs.frozen
class Notes:
    held: bool = False
    text: str = ""


@attrs.frozen
class Summary:
    length: int
    text: str


released: list[str] = []


def hold(ctx):  # type: ignore[no-untyped-def]
    return attrs.evolve(ctx.data, held=True)


def release(ctx):  # type: ignore[no-untyped-def]
    released.append(ctx.instance_id)
    return attrs.evolve(ctx.data, held=False)


def annotate(ctx):  # type: ignore[no-untyped-def]
    return attrs.evolve(ctx.data, text=ctx.input.name * ctx.input.copies)


class Annotate(Saga[Upload, Notes]):
    name = "annotate"
    new = State(initial=True)
    held = State()
    done = State(final=True)

    hold = new.to(held).run(hold, undo=release)
    annotate = held.to(done).run(annotate)


class Summarise(Saga[Upload, Notes, Summary]):
    name = "summarise"
    new = State(initial=True)
    held = State()
    done = State(final=True)

    hold = new.to(held).run(hold, undo=release)
    finish = held.to(done).run(lambda ctx: None)

    @staticmethod
    def output(saga_input: Upload, data: Notes) -> Summary:
        return Summary(len(saga_input.name), saga_input.name * saga_input.copies)


@attrs.frozen
class Note:
    text: str


class Await(Saga[Upload, Notes]):
    name = "await-note"
    new = State(initial=True)
    waiting = State(timeout=60)
    done = State(final=True)

    wait = new.to(waiting)
    noted = waiting.to(done).on(Event("note", Note))


def counts(engine: Engine) -> tuple[int, int]:
    runs = engine.list(limit=1000)
    return len(runs), sum(len(engine.history(r.id)) for r in runs)


def test_a_start_over_the_limit_writes_nothing(db: str) -> None:
    with Engine(db, sagas=[Annotate], max_payload_bytes=1_000) as engine:
        before = counts(engine)
        with pytest.raises(PayloadTooLarge) as raised:
            engine.start(Annotate, {"name": "x" * 2_000}, key="upload:1")
        error = raised.value
        assert (error.what, error.limit, error.saga) == ("input", 1_000, "annotate")
        assert error.size > 2_000
        assert "max_payload_bytes" in str(error)
        assert "reference" in str(error)
        assert counts(engine) == before
        # the key is free: nothing holds it
        run = engine.start(Annotate, {"name": "ok"}, key="upload:1")
        assert run.status is Status.COMPLETED


def test_a_step_whose_context_grows_over_the_limit_compensates_without_retrying(
    db: str,
) -> None:
    released.clear()
    with Engine(db, sagas=[Annotate], max_payload_bytes=1_000) as engine:
        run = engine.start(Annotate, {"name": "report-", "copies": 500})
        assert run.status is Status.COMPENSATED
        assert run.error is not None
        assert run.error.type == "statesaga.errors.PayloadTooLarge"
        assert run.error.retryable is False
        assert "context" in run.error.message
        assert released == [run.id]
        attempts = [h for h in engine.history(run.id) if h.step == "annotate"]
        assert len(attempts) == 1  # not retried
        # the stored context is the last one that fit
        assert engine.get(run.id).data == Notes(held=False)


def test_an_output_over_the_limit_fails_the_last_step(db: str) -> None:
    released.clear()
    with Engine(db, sagas=[Summarise], max_payload_bytes=1_000) as engine:
        ok = engine.start(Summarise, {"name": "short"})
        assert ok.status is Status.COMPLETED
        assert ok.output == Summary(5, "short")
        run = engine.start(Summarise, {"name": "long-", "copies": 400})
        assert run.status is Status.COMPENSATED
        assert run.error is not None
        assert "output" in run.error.message
        assert run.output is None


def test_an_event_payload_over_the_limit_is_refused_and_not_kept(db: str) -> None:
    with Engine(db, sagas=[Await], max_payload_bytes=1_000) as engine:
        run = engine.start(Await, {"name": "a"})
        assert run.status is Status.WAITING
        with pytest.raises(PayloadTooLarge) as raised:
            engine.send("note", {"text": "x" * 5_000}, instance_id=run.id)
        assert raised.value.what == "payload of event 'note'"
        assert raised.value.instance_id == run.id
        assert engine.get(run.id).inbox == ()
        delivered = engine.send("note", {"text": "fits"}, instance_id=run.id)
        assert delivered.run is not None
        assert delivered.run.status is Status.COMPLETED


def test_no_limit_when_none(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'db.sqlite'}", max_payload_bytes=None) as engine:
        run = engine.start(Annotate, {"name": "x" * 3_000_000})
        assert run.status is Status.COMPLETED


def test_the_default_limit_is_two_mebibytes(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'db.sqlite'}") as engine:
        assert engine.runtime.limit.max_bytes == 2 * 1024 * 1024
        with pytest.raises(PayloadTooLarge):
            engine.start(Annotate, {"name": "x" * (2 * 1024 * 1024)})
        assert list(engine.list()) == []


def test_the_setting_reaches_the_engine(tmp_path: Path) -> None:
    settings = Settings.load(
        environ={"STATESAGA_MAX_PAYLOAD_BYTES": "500"},
        cwd=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    assert settings.max_payload_bytes == 500
    with Engine.from_settings(settings) as engine, pytest.raises(PayloadTooLarge):
        engine.start(Annotate, {"name": "x" * 600})
    unlimited = Settings.load(
        environ={"STATESAGA_MAX_PAYLOAD_BYTES": ""},
        cwd=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    assert unlimited.max_payload_bytes is None


def test_a_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Engine(f"sqlite:///{tmp_path / 'db.sqlite'}", max_payload_bytes=0)


def test_the_async_engine_keeps_the_same_limit(db: str) -> None:
    released.clear()

    async def main() -> None:
        async with AsyncEngine(db, sagas=[Annotate], max_payload_bytes=1_000) as engine:
            with pytest.raises(PayloadTooLarge):
                await engine.start(Annotate, {"name": "x" * 2_000})
            run = await engine.start(Annotate, {"name": "report-", "copies": 500})
            assert run.status is Status.COMPENSATED
            assert run.error is not None
            assert run.error.retryable is False

    asyncio.run(main())
