"""The checkout's HTTP API: an ASGI app (Starlette) over a :class:`~definitions.checkout.shop.Shop`.

Install ``statesaga[http]``; serve it with ``python -m definitions.checkout.http``
(see :mod:`definitions.checkout.serve`) or give :func:`create_app` to any ASGI server.

===================================  ==============================================================
endpoint                             answers
===================================  ==============================================================
``POST /carts/{cart_id}/complete``   200 the order; 202 the payment waits for 3-D Secure (or retry)
                                     (``Location`` names the checkout); 404 unknown cart; 409 a
                                     checkout of the cart is running or waiting; 422 invalid cart,
                                     insufficient stock or an unusable cart id; 402 payment
                                     declined; 504 the deadline passed; 503 the database or the
                                     locks are unreachable (``Retry-After``); 500 anything else
``POST /payments/webhook``           200 once the delivery is durably recorded (accepted, kept for
                                     later, a duplicate, or too late: ``status`` says which); 400
                                     no or a malformed ``Shop-Signature``; 401 a signature that
                                     does not match or is stale; 409 the provider does not hold
                                     the payment as the webhook says; 413 a body over 64 KiB; 422
                                     a body that is not a webhook event
``GET /checkouts/{checkout_id}``     200 the checkout: status, state, error (a code and a message
                                     for the storefront), order and history; 404 unknown checkout
``GET /problems/{name}``             200 what a problem type means (the ``type`` of error bodies)
===================================  ==============================================================

Choices:

- **A completed cart answers with its order.** Completing a cart that is
  already completed is ``200`` with the existing order and
  ``"already_completed": true``, not a ``409``: a client that retries a POST
  whose answer it lost gets the answer it missed, and nothing runs again.
- **Errors are problem details** (see :mod:`definitions.checkout.problems`):
  a stable ``code``, a sentence for the storefront, ``field`` when a part of
  the request is at fault, never an exception's text.
- **X-Request-ID** (printable ASCII, at most 128 characters; otherwise a new
  one is made) becomes the checkout's correlation id and is echoed on every
  response, errors included.
- **Webhooks are verified, then recorded, never raced.** The signature
  (:mod:`definitions.checkout.signing`) is checked on the raw body before a
  field is read; the payment's status is read back from the provider; then
  the event goes to the checkout's durable inbox, deduplicated by its id,
  whether or not the checkout is busy. ``200`` means it is recorded: the
  provider need not deliver it again.
- **Time runs in a worker.** A 3-D Secure wait that times out, or a deadline
  that passes while nobody calls, is acted on by a statesaga worker (in this
  process, or ``statesaga worker`` processes); until then the cart answers 409.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from definitions.checkout.errors import CheckoutError
from definitions.checkout.problems import (
    PROBLEM_TYPES,
    RequestRejected,
    checkout_problem,
    problem,
    public_error,
    rejected,
    request_id,
    request_id_of,
)
from definitions.checkout.provider import ProviderUnavailable
from definitions.checkout.saga import CompleteCart
from definitions.checkout.shop import CheckoutResult, Shop, WebhookReceipt
from definitions.checkout.signing import DEFAULT_TOLERANCE, SIGNATURE_HEADER, SignatureError, verify
from definitions.checkout.validation import (
    MAX_WEBHOOK_BYTES,
    checked_id,
    json_body,
    read_body,
    webhook_event,
)
from statesaga import HistoryEntry, InstanceNotFound, LocksUnavailable, Run, Status, StoreError

__all__ = ["RETRY_AFTER", "RequestIdMiddleware", "create_app"]

log = logging.getLogger("definitions.checkout.http")

RETRY_AFTER = 2
"""Seconds a 503 asks the client to wait before trying again."""

# what "cannot reach the database, the locks or the provider just now" looks like from here
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,  # the pool had no connection to give in time
    StoreError,
    LocksUnavailable,
    ProviderUnavailable,
)


def _unavailable(error: BaseException) -> bool:
    if isinstance(error, _UNAVAILABLE):
        return True
    # a statement that failed because its connection died is as good as unreachable
    return isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated


def _unavailable_response(request: Request) -> Response:
    kind = PROBLEM_TYPES["service-unavailable"]
    return problem(
        request,
        kind.status,
        kind.title,
        "the shop cannot reach its database, locks or payment provider just now; nothing "
        f"was changed: try again in {RETRY_AFTER} seconds",
        code=kind.name,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


class RequestIdMiddleware:
    """Takes (or makes) the request id, echoes it on every response; turns crashes into 5xx.

    It sits outside Starlette's exception handling, so an error no handler
    took still gets a problem response with the request id (503 with
    ``Retry-After`` when the store or the locks are unreachable, else 500),
    and is logged with it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(Headers(scope=scope).get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if started:
                raise
            request = Request(scope)
            if _unavailable(error):
                log.warning(
                    "request %s (%s %s): unavailable: %r",
                    rid,
                    scope["method"],
                    scope["path"],
                    error,
                )
                response = _unavailable_response(request)
            else:
                log.exception("request %s (%s %s) failed", rid, scope["method"], scope["path"])
                response = problem(
                    request,
                    500,
                    HTTPStatus.INTERNAL_SERVER_ERROR.phrase,
                    "an unexpected error occurred: quote the request id when you report it",
                )
            await response(scope, receive, send_with_id)


# -- bodies ------------------------------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()


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
        "error": public_error(run.error, run.status.value),
        "created_at": _timestamp(run.created_at),
        "updated_at": _timestamp(run.updated_at),
    }


def _history_body(entry: HistoryEntry, status: str) -> dict[str, Any]:
    return {
        "kind": entry.kind.value,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "transition": entry.transition,
        "event": entry.event,
        "attempt": entry.attempt,
        "error": public_error(entry.error, status),
        "at": _timestamp(entry.finished_at),
    }


def _receipt_body(receipt: WebhookReceipt) -> dict[str, Any]:
    return {
        "event_id": receipt.event_id,
        "delivery": receipt.status,
        "duplicate": receipt.duplicate,
        "reason": receipt.reason if receipt.status == "ignored" else None,
        "checkout": None if receipt.run is None else _checkout_body(receipt.run),
    }


# -- the app -----------------------------------------------------------------------------------


class _Endpoints:
    """The routes' functions over one shop (sync ones run in Starlette's threadpool)."""

    def __init__(self, shop: Shop, webhook_secret: str, tolerance: float) -> None:
        self.shop = shop
        self.webhook_secret = webhook_secret
        self.tolerance = tolerance

    def complete_cart(self, request: Request) -> Response:
        cart_id = checked_id(request.path_params["cart_id"], "cart_id")
        result = self.shop.complete(cart_id, correlation_id=request_id_of(request))
        body = _result_body(result)
        if result.status != "completed":  # requires_action, or processing (a retry put off)
            return JSONResponse(
                body, status_code=202, headers={"Location": f"/checkouts/{result.checkout_id}"}
            )
        return JSONResponse(body)

    async def payment_webhook(self, request: Request) -> Response:
        body = await read_body(request, MAX_WEBHOOK_BYTES)
        try:
            verify(
                request.headers.get(SIGNATURE_HEADER),
                body,
                self.webhook_secret,
                tolerance=self.tolerance,
            )
        except SignatureError as error:
            raise RequestRejected(error.code, error.message, field=SIGNATURE_HEADER) from None
        event = webhook_event(json_body(body, "invalid-webhook"))
        receipt = await run_in_threadpool(self.shop.receive_webhook, event)
        return JSONResponse(_receipt_body(receipt))

    def get_checkout(self, request: Request) -> Response:
        checkout_id = checked_id(request.path_params["checkout_id"], "checkout_id")
        run = self.shop.checkout(checkout_id)
        if run.saga != CompleteCart.name:
            raise InstanceNotFound(f"no checkout {checkout_id!r}", instance_id=checkout_id)
        status = run.status.value
        return JSONResponse(
            {**_checkout_body(run), "history": [_history_body(e, status) for e in run.history]}
        )

    async def problem_type(self, request: Request) -> Response:
        kind = PROBLEM_TYPES.get(request.path_params["name"])
        if kind is None:
            raise HTTPException(404, "no such problem type")
        return JSONResponse(
            {
                "type": kind.uri,
                "code": kind.name,
                "title": kind.title,
                "status": kind.status,
                "description": kind.description,
            }
        )


async def _on_checkout_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, CheckoutError)
    if error.status >= 500 and error.status != 504:
        log.error("request %s: %s", request_id_of(request), error)
    return checkout_problem(request, error)


async def _on_not_found(request: Request, error: Exception) -> Response:
    kind = PROBLEM_TYPES["checkout-not-found"]
    return problem(request, kind.status, kind.title, "no checkout with that id", code=kind.name)


async def _on_rejected(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestRejected)
    return rejected(request, error)


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    phrase = HTTPStatus(error.status_code).phrase
    response = problem(request, error.status_code, phrase, phrase.lower())
    response.headers.update(error.headers or {})
    return response


async def _on_unavailable(request: Request, error: Exception) -> Response:
    log.warning("request %s: unavailable: %r", request_id_of(request), error)
    return _unavailable_response(request)


def _thread_limit(threads: int | None) -> Callable[[Starlette], Any]:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if threads is not None:
            import anyio.to_thread

            # the threads that run sync endpoints: each may hold a database connection
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    return lifespan


def create_app(
    shop: Shop,
    *,
    webhook_secret: str,
    signature_tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
    mounts: tuple[BaseRoute, ...] = (),
) -> Starlette:
    """The checkout API over ``shop`` (which the caller opens and closes).

    Args:
        webhook_secret: the secret shared with the payment provider that signs webhooks.
        signature_tolerance: the replay window, in seconds either side of now.
        threads: how many requests run shop code at once (Starlette's threadpool;
            each may hold a database connection). ``None`` keeps anyio's default (40).
        mounts: more routes (the in-process provider of ``python -m definitions.checkout.http``).
    """
    if not webhook_secret:
        raise ValueError("create_app needs the webhook secret shared with the payment provider")
    endpoints = _Endpoints(shop, webhook_secret, signature_tolerance)
    handlers: dict[Any, Callable[[Request, Exception], Any]] = {
        CheckoutError: _on_checkout_error,
        InstanceNotFound: _on_not_found,
        RequestRejected: _on_rejected,
        HTTPException: _on_http_error,
    }
    handlers.update(dict.fromkeys(_UNAVAILABLE, _on_unavailable))
    return Starlette(
        routes=[
            Route("/carts/{cart_id}/complete", endpoints.complete_cart, methods=["POST"]),
            Route("/payments/webhook", endpoints.payment_webhook, methods=["POST"]),
            Route("/checkouts/{checkout_id}", endpoints.get_checkout, methods=["GET"]),
            Route("/problems/{name}", endpoints.problem_type, methods=["GET"]),
            *mounts,
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=handlers,
        lifespan=_thread_limit(threads),
    )


if __name__ == "__main__":
    from definitions.checkout.serve import main

    main()
