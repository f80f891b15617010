"""OpenTelemetry spans of runs and steps, for ``OpenTelemetryObserver``.

Imported only when an observer traces a run, so ``import statesaga`` never
loads OpenTelemetry. A run's trace context is stored as W3C ``traceparent``
(then ``;tracestate`` when there is one), read and written through
OpenTelemetry's W3C propagator whatever propagators the process configured:
what is stored must mean the same to every process that reads it.

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
>>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
>>> spans = InMemorySpanExporter()
>>> provider = TracerProvider()
>>> provider.add_span_processor(SimpleSpanProcessor(spans))
>>> trace = OtelRunTrace(provider.get_tracer("statesaga"), saga="greet", instance_id="i-1",
...                      correlation_id="c-1", operation="start", trace_context=None)
>>> step = trace.step(step="say", attempt=1, undo=False)
>>> with step.activate():
...     pass  # the step runs here, its span current
>>> step.end(None)
>>> trace.end(status=None, error=None)
>>> [(s.name, s.parent.span_id == trace.span.get_span_context().span_id if s.parent else None)
...  for s in spans.get_finished_spans()]
[('say', True), ('saga greet', None)]
>>> trace.trace_context.count("-")  # version-traceid-spanid-flags
3
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from statesaga.core import ErrorInfo, Status
from statesaga.store.schema import TRACE_CONTEXT_LENGTH

__all__ = ["OtelRunTrace", "OtelStepTrace", "decode", "encode"]

_W3C = TraceContextTextMapPropagator()


def encode(span: Span) -> str | None:
    """``span``'s W3C trace context as stored with a run (``traceparent[;tracestate]``)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    parent = carrier.get("traceparent")
    if parent is None:  # an invalid (non-recording, unsampled root) span: nothing to join
        return None
    state = carrier.get("tracestate")
    if state and len(parent) + 1 + len(state) <= TRACE_CONTEXT_LENGTH:
        return f"{parent};{state}"
    return parent


def decode(stored: str) -> Context:
    """The context whose (remote) span is the one a run's ``stored`` trace context names."""
    parent, _, state = stored.partition(";")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    return _W3C.extract(carrier)


class OtelStepTrace:
    """A step attempt's span: current while the step runs, ended with its outcome."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def activate(self) -> AbstractContextManager[object]:
        # the outcome is judged by the engine (a returned wrong type fails too): the span's
        # status is set by end(), not by an exception escaping the call
        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def end(self, error: ErrorInfo | None) -> None:
        if error is not None:
            _set_error(self.span, error)
        self.span.end()


class OtelRunTrace:
    """The span of one engine call's drive of a run, the parent of its step spans.

    Started anew (``trace_context`` is ``None``), it is a child of the span
    current in the caller (an HTTP request's), and its context is what the
    run stores. Resumed, it is a child of the stored context, so every drive
    of a run is in the run's trace; a span current in the caller that belongs
    to another trace (a webhook's request) is linked.
    """

    def __init__(
        self,
        tracer: Tracer,
        *,
        saga: str,
        instance_id: str,
        correlation_id: str,
        operation: str,
        trace_context: str | None,
    ) -> None:
        self.tracer = tracer
        self.attributes: dict[str, Any] = {
            "statesaga.saga": saga,
            "statesaga.instance_id": instance_id,
            "statesaga.correlation_id": correlation_id,
        }
        links: list[Link] = []
        parent: Context | None = None
        if trace_context is not None:
            parent = decode(trace_context)
            stored = trace.get_current_span(parent).get_span_context()
            caller = trace.get_current_span().get_span_context()
            if caller.is_valid and caller.trace_id != stored.trace_id:
                links.append(Link(caller, {"statesaga.link": "caller"}))
        self.span = tracer.start_span(
            f"saga {saga}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={**self.attributes, "statesaga.operation": operation},
            links=links,
        )
        self._context = trace.set_span_in_context(self.span)
        self.trace_context = encode(self.span) if trace_context is None else trace_context

    def step(self, *, step: str, attempt: int, undo: bool) -> OtelStepTrace:
        attributes = {**self.attributes, "statesaga.step": step, "statesaga.attempt": attempt}
        if undo:
            attributes["statesaga.compensation"] = True
        span = self.tracer.start_span(
            step, context=self._context, kind=SpanKind.INTERNAL, attributes=attributes
        )
        return OtelStepTrace(span)

    def end(self, *, status: Status | None, error: ErrorInfo | BaseException | None) -> None:
        span = self.span
        if status is not None:
            span.set_attribute("statesaga.status", status.value)
        if isinstance(error, BaseException):
            span.record_exception(error)
            _set_error(span, ErrorInfo(type(error).__name__, str(error)))
        elif error is not None:
            span.set_attribute("statesaga.error_type", error.type)
            if status is Status.FAILED:  # a compensated run did what it promises
                _set_error(span, error)
        span.end()


def _set_error(span: Span, error: ErrorInfo) -> None:
    span.set_attribute("error.type", error.type)
    span.set_attribute("statesaga.error_type", error.type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{error.type}: {error.message}"))
