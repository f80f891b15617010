"""End to end: a checkout's traces leave through the real OTLP/HTTP exporter.

The spans are posted to a receiver listening on 127.0.0.1, which decodes
them with OpenTelemetry's own protobuf classes; a step calls a real payment
service over HTTP inside a span of its own, and the run is finished later by
another engine (a worker taking the webhook), in the same trace.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest

from statesaga import Engine, Retry, Saga, State, Status

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

import httpx
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from statesaga.observability import OpenTelemetryObserver

ONCE = Retry(attempts=1)


class Collector:
    """What an OTLP/HTTP receiver got: every span of every export request."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.lock = threading.Lock()

    def tree(self) -> str:
        """The spans as an indented tree, children in start order, one trace after another."""
        by_parent: dict[bytes, list[Span]] = {}
        ids = {span.span_id for span in self.spans}
        for span in sorted(self.spans, key=lambda s: s.start_time_unix_nano):
            parent = span.parent_span_id if span.parent_span_id in ids else b""
            by_parent.setdefault(parent, []).append(span)
        lines: list[str] = []

        def walk(span: Span, depth: int) -> None:
            attributes = {a.key: a.value.string_value for a in span.attributes}
            note = attributes.get("statesaga.operation", "")
            lines.append(
                f"{'  ' * depth}{span.name}"
                + (f"  [{note}]" if note else "")
                + f"  trace {span.trace_id.hex()[:8]}"
            )
            for child in by_parent.get(span.span_id, ()):
                walk(child, depth + 1)

        for root in by_parent.get(b"", ()):
            walk(root, 0)
        return "\n".join(lines)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    collected = Collector()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            with collected.lock:
                collected.requests += 1
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collected.spans.extend(scope.spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server, url = serve(Receiver)
    yield collected, f"{url}/v1/traces"
    server.shutdown()
    server.server_close()


#: the traceparent headers the payment service received
SEEN: list[str] = []
#: the application's tracer provider (left out of the process-wide one, which other tests share)
APP: dict[str, TracerProvider] = {}


@pytest.fixture
def payments() -> Iterator[str]:
    class Provider(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            SEEN.append(self.headers.get("traceparent", ""))
            answer = json.dumps({"authorization": "auth-1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    SEEN.clear()
    server, url = serve(Provider)
    yield url
    server.shutdown()
    server.server_close()


@attrs.define
class CartInput:
    cart_id: str
    payments_url: str


@attrs.define
class CheckoutData:
    authorization: str = ""


def validate_cart(ctx: Any) -> None:
    return None


def authorize_payment(ctx: Any) -> CheckoutData:
    """A real HTTP call, in a client span of its own, its context sent along (W3C)."""
    tracer = APP["tracer_provider"].get_tracer("shop.payments")  # as an HTTP instrumentation's
    with tracer.start_as_current_span("POST /authorize", kind=trace.SpanKind.CLIENT) as span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        response = httpx.post(
            f"{ctx.input.payments_url}/authorize",
            headers={**headers, "Idempotency-Key": ctx.idempotency_key},
        )
        span.set_attribute("http.response.status_code", response.status_code)
    return CheckoutData(response.json()["authorization"])


def cancel_payment(ctx: Any) -> None:
    return None


def complete_cart(ctx: Any) -> None:
    return None


class Checkout(Saga[CartInput, CheckoutData]):
    name = "checkout"
    new = State(initial=True)
    validated = State()
    authorized = State()
    awaiting_capture = State(timeout=600)
    completed = State(final=True)

    validate = new.to(validated).run(validate_cart, read_only=True, retry=ONCE)
    authorize = validated.to(authorized).run(
        authorize_payment, undo=cancel_payment, timeout=10, retry=ONCE
    )
    wait_for_capture = authorized.to(awaiting_capture)
    complete = (
        awaiting_capture.to(completed)
        .on("payment_captured")
        .run(complete_cart, read_only=True, retry=ONCE)
    )


def test_a_checkout_is_traced_through_otlp_http_with_its_calls_nested(
    collector: tuple[Collector, str], payments: str, tmp_path: Any
) -> None:
    collected, endpoint = collector
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    APP["tracer_provider"] = provider
    observer = OpenTelemetryObserver(tracer_provider=provider)
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    api_tracer = provider.get_tracer("shop.api")
    try:
        with (
            api_tracer.start_as_current_span("POST /carts/42/checkout"),
            Engine(db, observer=observer) as api,
        ):
            run = api.start(Checkout, CartInput("42", payments), key="cart:42")
        assert run.status is Status.WAITING
        with (
            api_tracer.start_as_current_span("POST /webhooks/payments"),
            Engine(db, observer=observer, sagas=[Checkout]) as worker,
        ):
            delivery = worker.send("payment_captured", instance_id=run.id)
        assert delivery.run.status is Status.COMPLETED
    finally:
        provider.shutdown()

    spans = {span.name: span for span in collected.spans if span.name != "saga checkout"}
    runs = sorted(
        (span for span in collected.spans if span.name == "saga checkout"),
        key=lambda span: span.start_time_unix_nano,
    )
    assert len(runs) == 2
    started, resumed = runs
    request, call = spans["POST /carts/42/checkout"], spans["POST /authorize"]
    step = spans["authorize"]
    # the HTTP call is the step's child, the step the run's, the run the request's
    assert call.parent_span_id == step.span_id
    assert step.parent_span_id == started.span_id
    assert started.parent_span_id == request.span_id
    assert call.kind == Span.SpanKind.SPAN_KIND_CLIENT
    # the payment service was told the client span's context
    (header,) = SEEN
    assert header.startswith(f"00-{call.trace_id.hex()}-{call.span_id.hex()}-")
    # the step the worker ran is in the same trace, under the run's stored span
    assert resumed.trace_id == started.trace_id == spans["complete"].trace_id
    assert resumed.parent_span_id == started.span_id
    assert spans["complete"].parent_span_id == resumed.span_id
    # and links the webhook's request, which has a trace of its own
    webhook = spans["POST /webhooks/payments"]
    assert webhook.trace_id != started.trace_id
    assert [link.span_id for link in resumed.links] == [webhook.span_id]
    assert collected.requests == len(collected.spans)  # each span went over HTTP
    print(collected.tree())
