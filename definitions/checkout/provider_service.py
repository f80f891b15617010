"""The simulated payment provider as a small HTTP service, shared by every process of a shop.

In production every API process and every ``statesaga worker`` talks to one
payment provider; so must the simulated one, or a payment authorized by one
process is unknown to the others (a worker's compensation could not cancel
it, a webhook could not be checked). Serve it with::

    python -m definitions.checkout.provider --port 8100 \\
        --webhook-url http://127.0.0.1:8001/payments/webhook

and point the shop at it with ``CHECKOUT_PROVIDER_URL=http://127.0.0.1:8100``
(:func:`definitions.checkout.resources` then returns an
:class:`~definitions.checkout.provider_client.HttpProvider`). The secret that
signs webhooks comes from ``--webhook-secret`` or ``CHECKOUT_WEBHOOK_SECRET``,
the same variable the API reads.

==========================================  ===================================================
endpoint                                    answers
==========================================  ===================================================
``POST /authorize``                         200 the authorization; 402 declined; 503 try again
``POST /cancel``                            200 ``{"authorization": ...}`` (null: nothing held)
``GET /payments/{provider_ref}``            200 ``{"status": ...}``; 404 no such payment
``POST /payments/{provider_ref}/action``    the customer confirms (``{"succeeded": true}``) or
                                            abandons 3-D Secure: the provider signs the webhook
                                            and delivers it to the ``--webhook-url`` (trying
                                            each in turn, again on a non-2xx answer); 200 the
                                            event, the signed delivery and how it was answered
``GET /payments``                           200 every payment the provider knows of
==========================================  ===================================================
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import attrs
import cattrs
import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from definitions.checkout.errors import PaymentDeclined
from definitions.checkout.provider import (
    PaymentRequest,
    ProviderUnavailable,
    SignedDelivery,
    SimulatedProvider,
)

__all__ = ["WEBHOOK_SECRET_ENV", "create_provider_app", "deliver", "main"]

log = logging.getLogger("definitions.checkout.provider")

WEBHOOK_SECRET_ENV = "CHECKOUT_WEBHOOK_SECRET"
"""The environment variable holding the secret shared by the provider and the shop."""

_strict = cattrs.Converter(forbid_extra_keys=True)


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {type(value).__name__}")
    return value


_strict.register_structure_hook(str, _strict_str)
_strict.register_structure_hook(int, _strict_int)


def deliver(
    delivery: SignedDelivery, urls: Sequence[str], *, attempts: int = 5, pause: float = 0.2
) -> dict[str, Any]:
    """Post ``delivery`` to the first of ``urls`` that takes it (a 2xx), retrying as providers do.

    Returns the last answer: ``{"url", "status", "attempt"}`` (``status`` None when
    nothing answered).
    """
    answer: dict[str, Any] = {"url": None, "status": None, "attempt": 0}
    with httpx.Client(timeout=10) as client:
        for attempt in range(1, attempts + 1):
            for url in urls:
                try:
                    response = client.post(url, content=delivery.body, headers=delivery.headers)
                except httpx.HTTPError as error:
                    log.warning("webhook %s to %s: %s", delivery.event.id, url, error)
                    answer = {"url": url, "status": None, "attempt": attempt}
                    continue
                answer = {"url": url, "status": response.status_code, "attempt": attempt}
                if response.is_success:
                    return answer
                log.warning("webhook %s to %s: %s", delivery.event.id, url, response.status_code)
            time.sleep(pause * attempt)
    return answer


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def create_provider_app(provider: SimulatedProvider, webhook_urls: Sequence[str] = ()) -> Starlette:
    """The provider's HTTP API over ``provider`` (deliveries go to ``webhook_urls``)."""

    async def read(request: Request) -> Any:
        try:
            return await request.json()
        except (ValueError, RecursionError):
            return None

    async def authorize(request: Request) -> Response:
        try:
            payment = _strict.structure(await read(request), PaymentRequest)
        except (cattrs.BaseValidationError, TypeError, ValueError, AttributeError):
            return _error(422, "invalid-request", "send a PaymentRequest as a JSON object")
        try:
            authorization = await run_in_threadpool(provider.authorize, payment)
        except PaymentDeclined as declined:
            return _error(402, "declined", str(declined))
        except ProviderUnavailable as unavailable:
            return _error(503, "unavailable", str(unavailable))
        return JSONResponse(attrs.asdict(authorization))

    async def cancel(request: Request) -> Response:
        body = await read(request)
        key = body.get("idempotency_key") if isinstance(body, dict) else None
        if not isinstance(key, str):
            return _error(422, "invalid-request", 'send {"idempotency_key": "..."}')
        authorization = provider.cancel(key)
        return JSONResponse(
            {"authorization": None if authorization is None else attrs.asdict(authorization)}
        )

    async def status(request: Request) -> Response:
        provider_ref = request.path_params["provider_ref"]
        found = provider.status(provider_ref)
        if found is None:
            return _error(404, "unknown-payment", f"no payment {provider_ref!r}")
        return JSONResponse({"provider_ref": provider_ref, "status": found})

    async def action(request: Request) -> Response:
        provider_ref = request.path_params["provider_ref"]
        body = await read(request)
        succeeded = body.get("succeeded", True) if isinstance(body, dict) else True
        if not isinstance(succeeded, bool):
            return _error(422, "invalid-request", 'send {"succeeded": true} or false')
        if provider.status(provider_ref) is None:
            return _error(404, "unknown-payment", f"no payment {provider_ref!r}")
        delivery = provider.signed(provider.finish_action(provider_ref, succeeded=succeeded))
        answer = await run_in_threadpool(deliver, delivery, webhook_urls) if webhook_urls else None
        return JSONResponse(
            {
                "event": attrs.asdict(delivery.event),
                "body": delivery.body.decode(),
                "headers": delivery.headers,
                "delivered": answer,
            }
        )

    async def payments(request: Request) -> Response:
        return JSONResponse([attrs.asdict(a) for a in provider.payments()])

    return Starlette(
        routes=[
            Route("/authorize", authorize, methods=["POST"]),
            Route("/cancel", cancel, methods=["POST"]),
            Route("/payments", payments, methods=["GET"]),
            Route("/payments/{provider_ref}", status, methods=["GET"]),
            Route("/payments/{provider_ref}/action", action, methods=["POST"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the simulated provider: ``python -m definitions.checkout.provider --port 8100``."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m definitions.checkout.provider",
        description="Serve the simulated payment provider over HTTP.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", type=int, default=8100, help="port (%(default)s)")
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        help="where to deliver webhooks, e.g. http://127.0.0.1:8001/payments/webhook "
        "(repeatable: tried in turn)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get(WEBHOOK_SECRET_ENV),
        help=f"the secret that signs webhooks (default: ${WEBHOOK_SECRET_ENV})",
    )
    parser.add_argument(
        "--slow-seconds", type=float, default=8.0, help="how long card_slow takes (%(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.webhook_secret:
        parser.error(f"set {WEBHOOK_SECRET_ENV} (or pass --webhook-secret): the shop shares it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    provider = SimulatedProvider(slow_seconds=args.slow_seconds, webhook_secret=args.webhook_secret)
    try:
        uvicorn.run(
            create_provider_app(provider, args.webhook_url),
            host=args.host,
            port=args.port,
            log_level="warning",
        )
    finally:
        provider.close()
