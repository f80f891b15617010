"""Metrics and traces: the ``Observer`` hooks and their OpenTelemetry implementation.

An engine calls its observer when a run starts, after each step and each
compensation, when a run ends, and after waiting for an entity lock. It also
asks it for a :class:`RunTrace` each time it drives a run, and that trace for
a :class:`StepTrace` around each step and compensation it calls. With no
observer (the default) the engine skips the calls altogether. OpenTelemetry
is imported only when an :class:`OpenTelemetryObserver` is made (the
``statesaga[otel]`` extra), so ``import statesaga`` never loads it.

>>> observer = Observer()  # the no-op base: subclass it and override what you need
>>> observer.run_started(saga="greet", instance_id="i-1", correlation_id="c-1")
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from statesaga.core import ErrorInfo, Status

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "ATTEMPT_BUCKETS",
    "DURATION_BUCKETS",
    "LOCK_WAIT_BUCKETS",
    "OpenTelemetryObserver",
    "Observer",
    "RunTrace",
    "StepTrace",
    "is_failed_compensation",
]

#: bucket boundaries (seconds) of the step and compensation durations: from a
#: millisecond (a local write) to five minutes (a slow external call)
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

#: bucket boundaries (seconds) of entity-lock waits: most take well under a
#: millisecond; a wait for a busy key lasts up to the caller's ``wait=``
LOCK_WAIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

#: bucket boundaries of the attempt on which a step succeeded
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0)


def is_failed_compensation(error: ErrorInfo | None) -> bool:
    """Whether a ``failed`` run's error is a compensation that gave up."""
    return error is not None and error.undo


class StepTrace(Protocol):
    """The trace of one step (or compensation) attempt, from :meth:`RunTrace.step`."""

    def activate(self) -> AbstractContextManager[object]:
        """Entered around the step's call, in the thread (or task) that runs it.

        What it makes current there (a span) is what the step's own
        instrumentation (an HTTP client's, a database driver's) nests under.
        """
        ...

    def end(self, error: ErrorInfo | None) -> None:
        """The attempt ended: succeeded (``None``) or failed with ``error``."""
        ...


class RunTrace(Protocol):
    """The trace of one engine call's drive of a run, from :meth:`Observer.trace_run`."""

    #: the trace context to store with a run being started (``None``: store none)
    trace_context: str | None

    def step(self, *, step: str, attempt: int, undo: bool) -> StepTrace:
        """The trace of an attempt of ``step`` (``undo``: of its compensation, ``step.undo``)."""
        ...

    def end(self, *, status: Status | None, error: ErrorInfo | BaseException | None) -> None:
        """The drive ended, leaving the run in ``status`` (``None``: it raised ``error``)."""
        ...


class Observer:
    """Hooks an engine calls as runs progress; every one does nothing here.

    Times are epoch seconds from the engine's clock. Hooks run on the engine's
    thread, after the transition they report was committed: keep them quick,
    and do not raise (an exception is logged and otherwise ignored).
    """

    def trace_run(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        operation: str,
        trace_context: str | None,
    ) -> RunTrace | None:
        """Begin tracing a drive of a run by one engine call; ``None``: do not trace.

        ``operation`` says which call drives it: ``start``, ``send`` (an event
        or cancel), ``resume``, ``retry`` or ``recover`` (a worker, or
        ``Engine.recover``). ``trace_context`` is what the run was stored with
        when it was started (``None`` when starting it, or when it was started
        untraced); a start stores the returned trace's ``trace_context``.
        """
        return None

    def run_started(self, *, saga: str, instance_id: str, correlation_id: str) -> None:
        """A run was started (its first row committed)."""

    def step_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        step: str,
        attempt: int,
        started: float,
        finished: float,
        error: ErrorInfo | None,
    ) -> None:
        """An attempt of a forward step ended (``error`` is ``None`` when it succeeded)."""

    def compensation_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        step: str,
        attempt: int,
        started: float,
        finished: float,
        error: ErrorInfo | None,
    ) -> None:
        """An attempt of a compensation (``step`` is ``"<transition>.undo"``) ended."""

    def run_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        status: Status,
        error: ErrorInfo | None,
        started: float,
        finished: float,
    ) -> None:
        """A run reached ``completed``, ``compensated`` or ``failed``."""

    def lock_waited(
        self, *, key: str, seconds: float, acquired: bool, saga: str | None = None
    ) -> None:
        """Taking the entity lock on ``key`` for a run of ``saga`` took ``seconds``
        (``acquired``, or gave up)."""


class OpenTelemetryObserver(Observer):
    """Report runs as OpenTelemetry metrics and spans.

    Metrics (meter ``statesaga``): counters ``statesaga.runs.started``,
    ``.completed``, ``.compensated``, ``.failed``, ``.timed_out`` and
    ``statesaga.compensations.failed``; histograms ``statesaga.step.duration``
    and ``statesaga.compensation.duration`` (seconds, :data:`DURATION_BUCKETS`),
    ``statesaga.step.attempts`` (:data:`ATTEMPT_BUCKETS`) and
    ``statesaga.lock.wait`` (seconds, :data:`LOCK_WAIT_BUCKETS`). Every data
    point carries the ``saga`` attribute. Every counter of a saga is reported
    (as 0) from the first time the observer hears of the saga, or from the
    start for the names given as ``sagas``, so that an alert on its increase
    sees the first failure.

    Traces (tracer ``statesaga``): a span ``saga <name>`` per drive of a run
    by one engine call (a start, a send, a worker's recovery), and inside it
    a span per step attempt and per compensation attempt, named after the
    step (``reserve``, ``reserve.undo``) and current while the step runs, so
    that spans the step opens (an instrumented HTTP call) are its children.
    A start stores its span's W3C trace context with the run; a later drive
    of the run (a worker, a send from another request) is a child of it, in
    the same trace, and links to the span current in the caller, if any.
    Attributes: ``statesaga.saga``, ``statesaga.instance_id``,
    ``statesaga.correlation_id``, ``statesaga.operation`` (run spans),
    ``statesaga.step`` and ``statesaga.attempt`` (step spans), and on
    failure ``error.type`` and ``statesaga.error_type``, with an error status.

    Args:
        meter_provider: default: the global one (``opentelemetry.metrics``).
        tracer_provider: default: the global one (``opentelemetry.trace``).
        sagas: names of the sagas whose counters are reported (as 0) at once.

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> reader = InMemoryMetricReader()
    >>> observer = OpenTelemetryObserver(MeterProvider([reader]), sagas=["complete-cart"])
    >>> [(m.name, m.data.data_points[0].value) for m in
    ...  reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics][:2]
    [('statesaga.runs.started', 0), ('statesaga.runs.completed', 0)]
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        *,
        sagas: Iterable[str] = (),
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as error:  # pragma: no cover - depends on the environment
            from statesaga.errors import StateSagaError

            raise StateSagaError(
                "OpenTelemetryObserver needs OpenTelemetry: pip install 'statesaga[otel]'"
            ) from error
        from statesaga import __version__

        meter = (meter_provider or metrics.get_meter_provider()).get_meter("statesaga", __version__)
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(
            "statesaga", __version__
        )
        self._started = meter.create_counter("statesaga.runs.started", "{run}", "Runs started")
        self._outcomes = {
            Status.COMPLETED: meter.create_counter(
                "statesaga.runs.completed", "{run}", "Runs that completed"
            ),
            Status.COMPENSATED: meter.create_counter(
                "statesaga.runs.compensated", "{run}", "Runs that compensated"
            ),
            Status.FAILED: meter.create_counter(
                "statesaga.runs.failed", "{run}", "Runs left failed (compensation gave up)"
            ),
        }
        self._timed_out = meter.create_counter(
            "statesaga.runs.timed_out", "{run}", "Runs ended by a deadline or timeout"
        )
        self._compensations_failed = meter.create_counter(
            "statesaga.compensations.failed", "{compensation}", "Compensations that gave up"
        )
        self._duration = meter.create_histogram(
            "statesaga.step.duration",
            "s",
            "Duration of step attempts",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._compensation_duration = meter.create_histogram(
            "statesaga.compensation.duration",
            "s",
            "Duration of compensation attempts",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._attempts = meter.create_histogram(
            "statesaga.step.attempts",
            "{attempt}",
            "Attempt number of each finished step",
            explicit_bucket_boundaries_advisory=ATTEMPT_BUCKETS,
        )
        self._lock_wait = meter.create_histogram(
            "statesaga.lock.wait",
            "s",
            "Time spent taking entity locks",
            explicit_bucket_boundaries_advisory=LOCK_WAIT_BUCKETS,
        )
        self._counters: tuple[Counter, ...] = (
            self._started,
            *self._outcomes.values(),
            self._timed_out,
            self._compensations_failed,
        )
        self._known: set[str] = set()
        self._known_lock = threading.Lock()
        for saga in sagas:
            self._know(saga)

    def _know(self, saga: str) -> None:
        """Report every counter of ``saga`` (as 0) the first time it is heard of."""
        if saga in self._known:
            return
        with self._known_lock:
            if saga in self._known:
                return
            self._known.add(saga)
        for counter in self._counters:
            counter.add(0, {"saga": saga})

    def trace_run(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        operation: str,
        trace_context: str | None,
    ) -> RunTrace:
        from statesaga._tracing import OtelRunTrace

        return OtelRunTrace(
            self._tracer,
            saga=saga,
            instance_id=instance_id,
            correlation_id=correlation_id,
            operation=operation,
            trace_context=trace_context,
        )

    def run_started(self, *, saga: str, instance_id: str, correlation_id: str) -> None:
        self._know(saga)
        self._started.add(1, {"saga": saga})

    def step_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        step: str,
        attempt: int,
        started: float,
        finished: float,
        error: ErrorInfo | None,
    ) -> None:
        self._know(saga)
        attributes = {"saga": saga, "step": step, "outcome": "error" if error else "ok"}
        self._duration.record(max(finished - started, 0.0), attributes)
        if error is None:
            self._attempts.record(attempt, {"saga": saga, "step": step})

    def compensation_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        step: str,
        attempt: int,
        started: float,
        finished: float,
        error: ErrorInfo | None,
    ) -> None:
        self._know(saga)
        attributes = {"saga": saga, "step": step, "outcome": "error" if error else "ok"}
        self._compensation_duration.record(max(finished - started, 0.0), attributes)

    def run_finished(
        self,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        status: Status,
        error: ErrorInfo | None,
        started: float,
        finished: float,
    ) -> None:
        self._know(saga)
        counter = self._outcomes.get(status)
        if counter is not None:
            counter.add(1, {"saga": saga})
        if error is not None and error.kind.is_timeout:
            self._timed_out.add(1, {"saga": saga})
        if status is Status.FAILED and is_failed_compensation(error):
            self._compensations_failed.add(1, {"saga": saga})

    def lock_waited(
        self, *, key: str, seconds: float, acquired: bool, saga: str | None = None
    ) -> None:
        attributes: dict[str, Any] = {"acquired": acquired}
        if saga is not None:
            self._know(saga)
            attributes["saga"] = saga
        self._lock_wait.record(seconds, attributes)
