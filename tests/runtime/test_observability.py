"""Metrics and traces: an observer sees runs start, steps and compensations run, runs end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
import sagas
from sagas import Fatal, Order, journal

from statesaga import Engine, EntityBusy, InProcessLocks, Status
from statesaga.core import ErrorInfo
from statesaga.observability import (
    ATTEMPT_BUCKETS,
    DURATION_BUCKETS,
    LOCK_WAIT_BUCKETS,
    Observer,
    OpenTelemetryObserver,
)

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()


class Telemetry:
    """An OpenTelemetry observer whose metrics and spans stay in memory."""

    def __init__(self, sagas: tuple[str, ...] | list[str] = ()) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.observer = OpenTelemetryObserver(
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            tracer_provider=tracer_provider,
            sagas=sagas,
        )

    def points(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def total(self, name: str) -> int:
        return sum(point.value for point in self.points().get(name, ()))


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def test_a_completed_run_is_counted_and_its_steps_measured(telemetry: Telemetry, db: str) -> None:
    with Engine(db, observer=telemetry.observer) as engine:
        run = engine.start(sagas.Linear, Order("o-1"), correlation_id="c-1")
    assert run.status is Status.COMPLETED
    assert telemetry.total("statesaga.runs.started") == 1
    assert telemetry.total("statesaga.runs.completed") == 1
    assert telemetry.total("statesaga.runs.failed") == 0
    durations = telemetry.points()["statesaga.step.duration"]
    assert sum(point.count for point in durations) == 3
    assert {point.attributes["saga"] for point in durations} == {"linear"}
    attempts = telemetry.points()["statesaga.step.attempts"]
    assert sum(point.count for point in attempts) == 3
    spans = telemetry.spans.get_finished_spans()
    assert [span.name for span in spans] == ["reserve", "charge", "ship", "saga linear"]
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["statesaga.instance_id"] == run.id
        assert span.attributes["statesaga.correlation_id"] == "c-1"
        assert span.end_time is not None
        assert span.start_time is not None
        assert span.end_time >= span.start_time


def test_compensations_are_spans_and_a_failed_one_is_counted(telemetry: Telemetry) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    with Engine("sqlite://", observer=telemetry.observer) as engine:
        compensated = engine.start(sagas.Linear, Order("o-2"))
        journal.fail["undo_reserve"] = -1
        failed = engine.start(sagas.Linear, Order("o-3"))
    assert compensated.status is Status.COMPENSATED
    assert failed.status is Status.FAILED
    assert telemetry.total("statesaga.runs.compensated") == 1
    assert telemetry.total("statesaga.runs.failed") == 1
    assert telemetry.total("statesaga.compensations.failed") == 1
    undo_spans = [s for s in telemetry.spans.get_finished_spans() if s.name == "reserve.undo"]
    assert {s.attributes["statesaga.instance_id"] for s in undo_spans if s.attributes} == {
        compensated.id,
        failed.id,
    }
    assert any(not s.status.is_ok for s in undo_spans)


def test_a_deadline_that_passes_counts_as_timed_out(telemetry: Telemetry, db: str) -> None:
    now = [1_000_000.0]
    with Engine(db, observer=telemetry.observer, clock=lambda: now[0]) as engine:
        run = engine.start(sagas.Waiting, Order("o-4"), deadline=10)
        assert run.status is Status.WAITING
        now[0] += 11
        (recovered,) = engine.recover()
    assert recovered.status is Status.COMPENSATED
    assert telemetry.total("statesaga.runs.timed_out") == 1
    assert telemetry.total("statesaga.runs.compensated") == 1


def test_lock_waits_are_measured(telemetry: Telemetry) -> None:
    with Engine("sqlite://", observer=telemetry.observer, locks=InProcessLocks()) as engine:
        engine.start(sagas.Linear, Order("o-5"), key="order:o-5")
    (point,) = telemetry.points()["statesaga.lock.wait"]
    assert point.count == 1
    assert point.attributes == {"acquired": True, "saga": "linear"}
    assert tuple(point.explicit_bounds) == LOCK_WAIT_BUCKETS


def test_a_lock_given_up_is_measured_with_its_saga(telemetry: Telemetry) -> None:
    locks = InProcessLocks()
    assert locks.try_acquire("order:o-8", "another process", ttl=60, now=time.time()) is not None
    with (
        Engine("sqlite://", observer=telemetry.observer, locks=locks) as engine,
        pytest.raises(EntityBusy),
    ):
        engine.start(sagas.Waiting, Order("o-8"), key="order:o-8")
    given_up = [
        p for p in telemetry.points()["statesaga.lock.wait"] if not p.attributes["acquired"]
    ]
    assert [(p.count, p.attributes["saga"]) for p in given_up] == [(1, "waiting")]


def test_durations_fall_in_buckets_made_for_seconds(telemetry: Telemetry) -> None:
    with Engine("sqlite://", observer=telemetry.observer) as engine:
        engine.start(sagas.Linear, Order("o-9"))
    for point in telemetry.points()["statesaga.step.duration"]:
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS
        # a step that takes well under a second is told apart from one that takes a second
        assert point.max < 1.0
        below_a_second = sum(
            count
            for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False)
            if bound < 1
        )
        assert below_a_second == point.count
    attempts = telemetry.points()["statesaga.step.attempts"]
    assert {tuple(point.explicit_bounds) for point in attempts} == {ATTEMPT_BUCKETS}


def test_every_counter_is_reported_from_the_start(telemetry: Telemetry) -> None:
    with Engine("sqlite://", observer=telemetry.observer) as engine:
        engine.start(sagas.Linear, Order("o-10"))
    points = telemetry.points()
    for name in (
        "statesaga.runs.failed",
        "statesaga.runs.timed_out",
        "statesaga.compensations.failed",
        "statesaga.runs.compensated",
    ):
        assert [(p.value, dict(p.attributes)) for p in points[name]] == [(0, {"saga": "linear"})]
    assert telemetry.total("statesaga.runs.completed") == 1

    named = Telemetry(sagas=["complete-cart"])  # before any run at all
    assert [p.value for p in named.points()["statesaga.compensations.failed"]] == [0]


def test_compensations_are_measured(telemetry: Telemetry) -> None:
    journal.fail["ship"] = -1
    journal.error["ship"] = Fatal
    with Engine("sqlite://", observer=telemetry.observer) as engine:
        run = engine.start(sagas.Linear, Order("o-11"))
    assert run.status is Status.COMPENSATED
    points = telemetry.points()["statesaga.compensation.duration"]
    assert {p.attributes["step"] for p in points} == {"reserve.undo", "charge.undo"}
    assert {p.attributes["outcome"] for p in points} == {"ok"}
    assert all(tuple(p.explicit_bounds) == DURATION_BUCKETS for p in points)
    assert sum(p.count for p in points) == 2


def test_the_async_engine_reports_too(telemetry: Telemetry) -> None:
    from statesaga import AsyncEngine

    async def main() -> Status:
        async with AsyncEngine("sqlite://", observer=telemetry.observer) as engine:
            return (await engine.start(sagas.Linear, Order("o-6"))).status

    assert asyncio.run(main()) is Status.COMPLETED
    assert telemetry.total("statesaga.runs.completed") == 1


class Recording(Observer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run_started(self, **details: Any) -> None:
        self.calls.append(("run_started", details))

    def step_finished(self, **details: Any) -> None:
        raise RuntimeError("a broken observer")

    def run_finished(self, **details: Any) -> None:
        self.calls.append(("run_finished", details))


def test_an_observer_is_called_with_plain_details_and_cannot_break_a_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = Recording()
    with Engine("sqlite://", observer=observer) as engine:
        run = engine.start(sagas.Linear, Order("o-7"), correlation_id="c-7")
    assert run.status is Status.COMPLETED
    (started, finished) = observer.calls
    assert started == (
        "run_started",
        {"saga": "linear", "instance_id": run.id, "correlation_id": "c-7"},
    )
    assert finished[1]["status"] is Status.COMPLETED
    assert finished[1]["error"] is None
    assert sum("observer" in r.getMessage() for r in caplog.records) == 3


def test_the_no_op_observer_does_nothing() -> None:
    observer = Observer()
    error = ErrorInfo("Boom", "boom")
    observer.step_finished(
        saga="s", instance_id="i", correlation_id="c", step="x", attempt=1,
        started=0.0, finished=1.0, error=error,
    )  # fmt: skip
    observer.lock_waited(key="k", seconds=0.1, acquired=False)


def test_importing_statesaga_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, statesaga, statesaga.engine, statesaga.observability, statesaga.cli;"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
