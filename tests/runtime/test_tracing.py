"""Traces that nest: a span per drive of a run, a span per step current while it runs.

A span a step opens (its HTTP call) is the child of the step's span, in the
calling thread, in a step's own thread (a timeout), and on the AsyncEngine;
a run resumed later by another engine (a worker) joins the trace its start
stored with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from statesaga import AsyncEngine, Engine, NonRetryableError, Retry, Saga, State, Status
from statesaga.observability import OpenTelemetryObserver
from statesaga.store.migrate import upgrade
from statesaga.store.sql import SqlStore

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

EXPORTED = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTED))
#: what the application's own code (and its instrumented HTTP client) traces with
SHOP = PROVIDER.get_tracer("shop")
NO_RETRY = Retry(attempts=1)


class Declined(NonRetryableError):
    """The payment provider said no."""


@attrs.define
class Cart:
    cart_id: str
    decline: bool = False


@attrs.define
class Checkout:
    threads: list[str] = attrs.Factory(list)


def _call_out(name: str, ctx: Any) -> Checkout:
    """What a step does: an outgoing call with a span of its own (as httpx's would be)."""
    with SHOP.start_as_current_span(f"POST /{name}", kind=trace.SpanKind.CLIENT):
        pass
    return Checkout([*ctx.data.threads, threading.current_thread().name])


def reserve(ctx: Any) -> Checkout:
    return _call_out("reserve", ctx)


async def authorize(ctx: Any) -> Checkout:
    await asyncio.sleep(0)
    if ctx.input.decline:
        with SHOP.start_as_current_span("POST /authorize"):
            raise Declined("card declined")
    return _call_out("authorize", ctx)


def ship(ctx: Any) -> Checkout:
    return _call_out("ship", ctx)  # with a timeout: in a thread of its own on Engine


def release(ctx: Any) -> None:
    with SHOP.start_as_current_span("DELETE /reserve"):
        pass


def confirm(ctx: Any) -> Checkout:
    return _call_out("confirm", ctx)


class Traced(Saga[Cart, Checkout]):
    name = "traced"
    new = State(initial=True)
    reserved = State()
    authorized = State()
    shipped = State(final=True)

    reserve = new.to(reserved).run(reserve, undo=release, retry=NO_RETRY)
    authorize = reserved.to(authorized).run(authorize, read_only=True, retry=NO_RETRY)
    ship = authorized.to(shipped).run(ship, read_only=True, timeout=30, retry=NO_RETRY)


class Awaiting(Saga[Cart, Checkout]):
    name = "awaiting"
    new = State(initial=True)
    reserved = State()
    waiting = State(timeout=60)
    done = State(final=True)

    reserve = new.to(reserved).run(reserve, undo=release, retry=NO_RETRY)
    ask = reserved.to(waiting)
    confirm = waiting.to(done).on("paid").run(confirm, read_only=True, retry=NO_RETRY)


@pytest.fixture
def observer() -> Iterator[OpenTelemetryObserver]:
    EXPORTED.clear()
    yield OpenTelemetryObserver(tracer_provider=PROVIDER)
    EXPORTED.clear()


def spans() -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in EXPORTED.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    return span.get_span_context().span_id


def assert_nested(found: dict[str, list[ReadableSpan]], steps: list[str]) -> ReadableSpan:
    """Each step's span is a child of the one run span; each call a child of its step."""
    (run,) = found["saga traced"]
    for step in steps:
        (step_span,) = found[step]
        (call,) = found[f"POST /{step}"]
        assert parent_of(step_span) == span_id(run)
        assert parent_of(call) == span_id(step_span)
        assert call.get_span_context().trace_id == run.get_span_context().trace_id
    return run


def test_spans_a_step_opens_nest_under_its_span_under_the_run(
    observer: OpenTelemetryObserver, db: str
) -> None:
    with (
        SHOP.start_as_current_span("POST /checkout") as request,
        Engine(db, observer=observer) as engine,
    ):
        run = engine.start(Traced, Cart("c-1"), correlation_id="req-1")
        stored = engine.store.get(run.id)
    assert run.status is Status.COMPLETED
    found = spans()
    root = assert_nested(found, ["reserve", "authorize", "ship"])
    # the run's span is a child of the span current where start() was called
    assert parent_of(root) == request.get_span_context().span_id
    assert root.attributes is not None
    assert root.attributes["statesaga.operation"] == "start"
    assert root.attributes["statesaga.status"] == "completed"
    (ship_span,) = found["ship"]
    assert ship_span.attributes is not None
    assert ship_span.attributes["statesaga.step"] == "ship"
    assert ship_span.attributes["statesaga.attempt"] == 1
    assert ship_span.attributes["statesaga.instance_id"] == run.id
    assert ship_span.attributes["statesaga.correlation_id"] == "req-1"
    # the step with a timeout ran in a thread of its own, its span current there too
    main = threading.current_thread().name
    assert run.data.threads[0] == main
    assert run.data.threads[2] != main
    # the run stores its span's trace context (W3C traceparent) for whoever resumes it
    assert stored is not None
    assert stored.trace_context is not None
    assert stored.trace_context.startswith(
        f"00-{root.get_span_context().trace_id:032x}-{span_id(root):016x}-"
    )


def test_the_async_engine_nests_spans_in_async_and_threaded_steps(
    observer: OpenTelemetryObserver,
) -> None:
    async def main() -> Status:
        async with AsyncEngine("sqlite://", observer=observer) as engine:
            return (await engine.start(Traced, Cart("c-2"))).status

    assert asyncio.run(main()) is Status.COMPLETED
    assert_nested(spans(), ["reserve", "authorize", "ship"])


def test_compensations_are_spans_under_the_run_and_a_failed_step_has_an_error_status(
    observer: OpenTelemetryObserver,
) -> None:
    with Engine("sqlite://", observer=observer) as engine:
        run = engine.start(Traced, Cart("c-3", decline=True))
    assert run.status is Status.COMPENSATED
    found = spans()
    (root,) = found["saga traced"]
    (failed,) = found["authorize"]
    (undo,) = found["reserve.undo"]
    (call,) = found["POST /authorize"]
    (undo_call,) = found["DELETE /reserve"]
    assert parent_of(failed) == parent_of(undo) == span_id(root)
    assert parent_of(call) == span_id(failed)
    assert parent_of(undo_call) == span_id(undo)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "test_tracing.Declined"
    assert undo.status.status_code is StatusCode.UNSET
    assert undo.attributes is not None
    assert undo.attributes["statesaga.compensation"] is True
    # compensated is what a saga promises: the run span says why, without an error status
    assert root.attributes is not None
    assert root.attributes["statesaga.status"] == "compensated"
    assert root.attributes["statesaga.error_type"] == "test_tracing.Declined"
    assert root.status.status_code is StatusCode.UNSET


def test_a_run_resumed_by_another_engine_joins_the_trace_its_start_stored(
    observer: OpenTelemetryObserver, db: str
) -> None:
    with (
        SHOP.start_as_current_span("POST /checkout"),
        Engine(db, observer=observer) as api,
    ):
        run = api.start(Awaiting, Cart("c-4"))
    assert run.status is Status.WAITING
    (started,) = spans()["saga awaiting"]
    trace_id = started.get_span_context().trace_id

    # the payment's webhook arrives at another process, in a request of its own
    with (
        SHOP.start_as_current_span("POST /webhook") as webhook,
        Engine(db, observer=observer, sagas=[Awaiting]) as worker,
    ):
        stored = worker.store.get(run.id)
        assert stored is not None
        assert stored.trace_context is not None
        assert stored.trace_context.startswith(f"00-{trace_id:032x}-")
        delivery = worker.send("paid", instance_id=run.id)
    assert delivery.run.status is Status.COMPLETED
    found = spans()
    resumed = next(s for s in found["saga awaiting"] if s is not started)
    (step,) = found["confirm"]
    (call,) = found["POST /confirm"]
    assert {s.get_span_context().trace_id for s in (resumed, step, call)} == {trace_id}
    assert parent_of(resumed) == span_id(started)
    assert parent_of(step) == span_id(resumed)
    assert parent_of(call) == span_id(step)
    assert resumed.attributes is not None
    assert resumed.attributes["statesaga.operation"] == "send"
    # the webhook's own trace is linked, both ways findable
    assert [link.context.span_id for link in resumed.links] == [webhook.get_span_context().span_id]


def test_a_timeout_recovered_by_a_worker_compensates_in_the_same_trace(
    observer: OpenTelemetryObserver,
) -> None:
    now = [1_000_000.0]
    store = SqlStore("sqlite://")
    with Engine(store, observer=observer, clock=lambda: now[0]) as api:
        run = api.start(Awaiting, Cart("c-5"))
        (started,) = spans()["saga awaiting"]
        now[0] += 61
        worker = Engine(store, observer=observer, clock=lambda: now[0], sagas=[Awaiting])
        (recovered,) = worker.recover()
    assert recovered.status is Status.COMPENSATED
    found = spans()
    resumed = next(s for s in found["saga awaiting"] if s is not started)
    (undo,) = found["reserve.undo"]
    assert resumed.get_span_context().trace_id == started.get_span_context().trace_id
    assert parent_of(resumed) == span_id(started)
    assert parent_of(undo) == span_id(resumed)
    assert resumed.attributes is not None
    assert resumed.attributes["statesaga.operation"] == "recover"
    assert resumed.links == ()  # nothing was current in the worker
    assert run.id == recovered.id


def test_without_an_observer_nothing_is_traced_or_stored(db: str) -> None:
    EXPORTED.clear()
    with Engine(db) as engine:
        run = engine.start(Awaiting, Cart("c-6"))
        stored = engine.store.get(run.id)
    assert stored is not None
    assert stored.trace_context is None
    # only the step's own span, a root: the engine opened none around it
    assert [(s.name, s.parent) for s in EXPORTED.get_finished_spans()] == [("POST /reserve", None)]


def test_the_trace_context_column_comes_and_goes_with_its_migration(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")

    def columns() -> set[str]:
        return {c["name"] for c in sa.inspect(engine).get_columns("statesaga_instances")}

    upgrade(engine, "0002")
    assert "trace_context" not in columns()
    upgrade(engine)
    assert "trace_context" in columns()
    from alembic import command
    from alembic.config import Config

    from statesaga.store.migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert "trace_context" not in columns()
    engine.dispose()


class BrokenTracing(OpenTelemetryObserver):
    """An observer whose tracing fails: the runs it watches must not."""

    def trace_run(self, **details: Any) -> Any:
        raise RuntimeError("no tracing today")


def test_an_observer_that_cannot_trace_never_fails_a_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Engine("sqlite://", observer=BrokenTracing(tracer_provider=PROVIDER)) as engine:
        run = engine.start(Traced, Cart("c-7"))
        stored = engine.store.get(run.id)
    assert run.status is Status.COMPLETED
    assert stored is not None
    assert stored.trace_context is None
    assert any("failed to trace a run" in record.getMessage() for record in caplog.records)
