"""The checkout's HTTP API: an ASGI app (Starlette) over a :class:`~definitions.checkout.shop.Shop`.

Install ``statesaga[http]``; serve it with ``python -m definitions.checkout.http``
(see :func:`main`) or give :func:`create_app` to any ASGI server.

===================================  ==============================================================
endpoint                             answers
===================================  ==============================================================
``POST /carts/{cart_id}/complete``   200 the order; 202 the payment waits for 3-D Secure (or retry)
                                     (``Location`` names the checkout); 404 unknown cart; 409 a
                                     checkout of the cart is running or waiting; 422 invalid cart
                                     or insufficient stock; 402 payment declined; 504 the deadline
                                     passed; 500 anything else
``POST /payments/webhook``           200 the checkout after the delivery, or ``{"status":
                                     "ignored"}`` when no checkout matches; 409 it came before
                                     the checkout waits (the provider delivers it again); 422 a
                                     body that is not a webhook event; 413 a body over 64 KiB
``GET /checkouts/{checkout_id}``     200 the checkout: status, state, error, order and history;
                                     404 unknown checkout
``GET /problems/{name}``             200 what a problem type means (the ``type`` of error bodies)
===================================  ==============================================================

Choices:

- **A completed cart answers with its order.** Completing a cart that is
  already completed is ``200`` with the existing order and
  ``"already_completed": true``, not a ``409``: a client that retries a POST
  whose answer it lost (a timeout, a dropped connection) gets the answer it
  missed, and nothing runs again. ``409`` is kept for a checkout still in
  progress, which the client must wait for.
- **Errors are problem details** (RFC 9457, ``application/problem+json``):
  ``type``, ``title``, ``status``, ``detail`` and ``instance``, plus
  ``request_id``, and where known ``cart_id``, ``checkout_id`` and
  ``checkout_status`` (``compensated``: everything was undone; for a 409, the
  checkout in the way), and ``sku``, ``requested``, ``available`` for
  insufficient stock. ``type`` is a URI
  relative to the API (``/problems/insufficient-stock``) that ``GET`` explains.
  A 500 never carries a traceback or an exception's text: its ``request_id``
  and ``checkout_id`` lead to the log line and the run's recorded error.
- **X-Request-ID** (printable ASCII, at most 128 characters; otherwise a new
  one is made) becomes the checkout's correlation id and is echoed on every
  response, errors included.
- **Webhooks are acknowledged, not failed.** Providers deliver at least once:
  a duplicate or late delivery is ``200`` with the checkout as it stands.
  Unknown members in the body are ignored, as providers add fields over time.
  (A real provider's deliveries are signed; check the signature in front of
  this endpoint. The simulated provider does not sign.)
- **Time runs in a worker.** A 3-D Secure wait that times out, or a deadline
  that passes while nobody calls, is acted on by a statesaga worker; until
  then the cart answers 409. :func:`main` runs one beside the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter
from sqlalchemy.exc import NoResultFound
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from definitions.checkout import errors
from definitions.checkout.errors import CheckoutError, InsufficientStock
from definitions.checkout.provider import SimulatedProvider, WebhookEvent
from definitions.checkout.saga import CompleteCart
from definitions.checkout.shop import CheckoutResult, Shop
from statesaga import ErrorInfo, HistoryEntry, InstanceNotFound, Run, Status

__all__ = [
    "MAX_WEBHOOK_BYTES",
    "CHECKOUT_NOT_FOUND",
    "INVALID_WEBHOOK",
    "PROBLEM_TYPES",
    "ProblemResponse",
    "ProblemType",
    "RequestIdMiddleware",
    "create_app",
    "main",
    "seed",
]

log = logging.getLogger("definitions.checkout.http")

MAX_WEBHOOK_BYTES = 64 * 1024
"""A webhook body larger than this is refused (413) before it is parsed."""

_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces
_webhooks = make_converter(forbid_extra_keys=False)


class ProblemResponse(JSONResponse):
    """An RFC 9457 problem details response."""

    media_type = "application/problem+json"


@attrs.frozen
class ProblemType:
    """A kind of problem the API answers with; ``GET /problems/{name}`` shows it."""

    name: str
    title: str
    status: int
    description: str

    @property
    def uri(self) -> str:
        """The problem's ``type``: a URI relative to the API."""
        return f"/problems/{self.name}"


def _slug(kind: type[CheckoutError]) -> str:
    """``InsufficientStock`` -> ``insufficient-stock``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", kind.__name__).lower()


_CHECKOUT_ERRORS = (
    errors.CartNotFound,
    errors.CheckoutInProgress,
    errors.InvalidCart,
    errors.InsufficientStock,
    errors.PaymentDeclined,
    errors.CheckoutTimedOut,
    errors.CheckoutFailed,
)
CHECKOUT_NOT_FOUND = ProblemType(
    "checkout-not-found", "checkout not found", 404, "No checkout with that id."
)
INVALID_WEBHOOK = ProblemType(
    "invalid-webhook",
    "invalid webhook",
    422,
    "The body is not JSON, or not a webhook event: an object with provider_ref, reference "
    "(the cart id) and status (succeeded or failed).",
)
PROBLEM_TYPES: dict[str, ProblemType] = {
    problem.name: problem
    for problem in (
        *(
            ProblemType(_slug(kind), kind.title, kind.status, " ".join(kind.__doc__.split()))
            for kind in _CHECKOUT_ERRORS
            if kind.__doc__
        ),
        CHECKOUT_NOT_FOUND,
        INVALID_WEBHOOK,
    )
}
"""The problem types of the API's error bodies, by name."""


class _Invalid(Exception):
    """A request the API cannot take as it is (raised by the endpoints, answered as a problem)."""

    def __init__(self, status: int, detail: str, problem: ProblemType | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem


def _problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    **extensions: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": _request_id_of(request),
    }
    body.update((name, value) for name, value in extensions.items() if value is not None)
    return ProblemResponse(body, status_code=status)


def _checkout_problem(request: Request, error: CheckoutError) -> ProblemResponse:
    # a subclass without a type of its own (CartAlreadyCompleted) reads as its parent
    kind = next((k for k in type(error).__mro__ if k in _CHECKOUT_ERRORS), errors.CheckoutFailed)
    run: Run | None = error.run
    if error.status >= 500 and not isinstance(error, errors.CheckoutTimedOut):
        # the run records what went wrong; the client gets where to look, not internals
        detail = (
            f"the checkout of cart {error.cart_id!r} failed"
            + (f" (checkout {run.id}, {run.status.value})" if run is not None else "")
            + ": quote the request id when you report it"
        )
    else:
        detail = str(error)
    extensions: dict[str, Any] = {
        "cart_id": error.cart_id,
        "checkout_id": None if run is None else run.id,
        "checkout_status": None if run is None else run.status.value,
    }
    if isinstance(error, InsufficientStock):
        extensions.update(sku=error.sku, requested=error.requested, available=error.available)
    return _problem(
        request,
        error.status,
        error.title,
        detail,
        type_=PROBLEM_TYPES[_slug(kind)].uri,
        **extensions,
    )


# -- request ids -------------------------------------------------------------------------------


def _request_id(header: str | None) -> str:
    """The caller's request id when it is usable, else a new one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


class RequestIdMiddleware:
    """Takes (or makes) the request id, echoes it on every response; turns crashes into 500s.

    It sits outside Starlette's exception handling, so an error no handler
    took still gets a problem response with the request id, and is logged
    with it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(Headers(scope=scope).get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"])
            if started:
                raise
            request = Request(scope)
            response = _problem(
                request,
                500,
                HTTPStatus.INTERNAL_SERVER_ERROR.phrase,
                "an unexpected error occurred: quote the request id when you report it",
            )
            await response(scope, receive, send_with_id)


# -- bodies ------------------------------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _error(error: ErrorInfo | None) -> dict[str, Any] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def _result_body(result: CheckoutResult) -> dict[str, Any]:
    return {
        "cart_id": result.cart_id,
        "status": result.status,
        "order_id": result.order_id,
        "total": result.total,
        "currency": result.currency,
        "checkout_id": result.checkout_id,
        "provider_ref": result.provider_ref,
        "already_completed": result.already_completed,
    }


def _checkout_body(run: Run) -> dict[str, Any]:
    completed = run.status is Status.COMPLETED and run.output is not None
    return {
        "checkout_id": run.id,
        "cart_id": run.input.cart_id,
        "status": run.status.value,
        "state": run.state,
        "correlation_id": run.correlation_id,
        "order_id": run.output.order_id if completed and run.output is not None else None,
        "total": run.data.total,
        "currency": run.data.currency,
        "provider_ref": run.data.provider_ref,
        "error": _error(run.error),
        "created_at": _timestamp(run.created_at),
        "updated_at": _timestamp(run.updated_at),
    }


def _history_body(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "kind": entry.kind.value,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "transition": entry.transition,
        "event": entry.event,
        "attempt": entry.attempt,
        "error": _error(entry.error),
        "at": _timestamp(entry.finished_at),
    }


async def _webhook_event(request: Request) -> WebhookEvent:
    """The body as a :class:`WebhookEvent`, or a 413/422 saying what is wrong with it."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            raise _Invalid(413, f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise _Invalid(422, f"the body is not JSON: {error}", INVALID_WEBHOOK) from error
    try:
        return _webhooks.structure(payload, WebhookEvent)
    except cattrs.BaseValidationError as error:
        where = "; ".join(cattrs.transform_error(error, path="$"))
        detail = f"the body is not a webhook event: {where}"
        raise _Invalid(422, detail, INVALID_WEBHOOK) from error
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise _Invalid(
            422,
            "the body is not a webhook event: send an object with provider_ref, reference "
            f"and status ({type(error).__name__}: {error})",
            INVALID_WEBHOOK,
        ) from error


# -- the app -----------------------------------------------------------------------------------


class _Endpoints:
    """The routes' functions over one shop (sync ones run in Starlette's threadpool)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def complete_cart(self, request: Request) -> Response:
        cart_id = request.path_params["cart_id"]
        result = self.shop.complete(cart_id, correlation_id=_request_id_of(request))
        body = _result_body(result)
        if result.status != "completed":  # requires_action, or processing (a retry put off)
            return JSONResponse(
                body, status_code=202, headers={"Location": f"/checkouts/{result.checkout_id}"}
            )
        return JSONResponse(body)

    async def payment_webhook(self, request: Request) -> Response:
        event = await _webhook_event(request)
        run = await run_in_threadpool(self.shop.payment_webhook, event)
        if run is None:
            return JSONResponse(
                {
                    "status": "ignored",
                    "detail": f"no checkout of cart {event.reference!r}: nothing to do",
                }
            )
        return JSONResponse(_checkout_body(run))

    def get_checkout(self, request: Request) -> Response:
        checkout_id = request.path_params["checkout_id"]
        run = self.shop.checkout(checkout_id)
        if run.saga != CompleteCart.name:
            raise InstanceNotFound(f"no checkout {checkout_id!r}", instance_id=checkout_id)
        return JSONResponse(
            {**_checkout_body(run), "history": [_history_body(e) for e in run.history]}
        )

    async def problem_type(self, request: Request) -> Response:
        problem = PROBLEM_TYPES.get(request.path_params["name"])
        if problem is None:
            raise HTTPException(404, f"no problem type {request.path_params['name']!r}")
        return JSONResponse(
            {
                "type": problem.uri,
                "title": problem.title,
                "status": problem.status,
                "description": problem.description,
            }
        )


async def _on_checkout_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, CheckoutError)
    if error.status >= 500 and not isinstance(error, errors.CheckoutTimedOut):
        log.error("request %s: %s", _request_id_of(request), error)
    return _checkout_problem(request, error)


async def _on_not_found(request: Request, error: Exception) -> Response:
    problem = CHECKOUT_NOT_FOUND
    return _problem(request, problem.status, problem.title, str(error), type_=problem.uri)


async def _on_invalid(request: Request, error: Exception) -> Response:
    assert isinstance(error, _Invalid)
    if error.problem is None:
        title, type_ = HTTPStatus(error.status).phrase, "about:blank"
    else:
        title, type_ = error.problem.title, error.problem.uri
    return _problem(request, error.status, title, error.detail, type_=type_)


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    response = _problem(
        request, error.status_code, HTTPStatus(error.status_code).phrase, str(error.detail)
    )
    response.headers.update(error.headers or {})
    return response


def create_app(shop: Shop) -> Starlette:
    """The checkout API over ``shop`` (which the caller opens and closes)."""
    endpoints = _Endpoints(shop)
    return Starlette(
        routes=[
            Route("/carts/{cart_id}/complete", endpoints.complete_cart, methods=["POST"]),
            Route("/payments/webhook", endpoints.payment_webhook, methods=["POST"]),
            Route("/checkouts/{checkout_id}", endpoints.get_checkout, methods=["GET"]),
            Route("/problems/{name}", endpoints.problem_type, methods=["GET"]),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            CheckoutError: _on_checkout_error,
            InstanceNotFound: _on_not_found,
            _Invalid: _on_invalid,
            HTTPException: _on_http_error,
        },
    )


# -- serving -----------------------------------------------------------------------------------

_SEED_PRODUCTS = (("mug", "Enamel mug", 1250, 50), ("tea", "Loose-leaf tea", 899, 50))
_SEED_METHODS = ("card_ok", "card_3ds", "card_declined")


def seed(shop: Shop) -> list[str]:
    """Put the demo products on sale (where missing) and make one cart per payment method."""
    for sku, name, price, stock in _SEED_PRODUCTS:
        try:
            shop.stock(sku)
        except NoResultFound:
            shop.add_product(sku, name, unit_price=price, stock=stock)
    return [shop.create_cart({"mug": 1, "tea": 2}, payment_method=m) for m in _SEED_METHODS]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the API: ``python -m definitions.checkout.http --db URL [--port N] [--seed]``.

    The shop pays through a :class:`SimulatedProvider`; a statesaga worker
    runs beside the server, so that a 3-D Secure wait that times out is
    compensated (and its cart freed) without anyone asking.
    """
    import uvicorn

    from statesaga.worker import Worker

    parser = argparse.ArgumentParser(
        prog="python -m definitions.checkout.http", description="Serve the checkout HTTP API."
    )
    parser.add_argument("--db", default="sqlite:///shop.db", help="database URL (%(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (%(default)s)")
    parser.add_argument("--seed", action="store_true", help="add demo products and carts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    provider = SimulatedProvider()
    stop = threading.Event()
    with Shop.open(args.db, provider=provider) as shop:
        if args.seed:
            for cart_id, method in zip(seed(shop), _SEED_METHODS, strict=True):
                print(f"cart {cart_id} ({method}): POST /carts/{cart_id}/complete")
        worker = threading.Thread(target=Worker(shop.engine).run, args=(stop,), daemon=True)
        worker.start()
        try:
            uvicorn.run(create_app(shop), host=args.host, port=args.port)
        finally:
            stop.set()
            provider.close()
            worker.join()


if __name__ == "__main__":
    main()
