"""The checkout's HTTP API, through a real server (uvicorn on 127.0.0.1) and an HTTP client.

The server, the shop and the controllable clock come from ``checkout_api``; the
webhook's signatures, inbox and bad input are in ``test_checkout_webhook``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from checkout_api import BACKENDS, Api, api, backend, ok, problem

from definitions.checkout.problems import PROBLEM_TYPES

__all__ = ["api", "backend"]  # the fixtures, imported for pytest


# -- completing a cart -------------------------------------------------------------------------


@BACKENDS
def test_complete_returns_the_order_and_the_request_id_is_the_correlation_id(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 2})

    response = api.complete(cart_id, request_id="req-checkout-1")

    body = ok(response)
    assert response.headers["x-request-id"] == "req-checkout-1"
    assert body["status"] == "completed"
    assert body["cart_id"] == cart_id
    assert body["total"] == 2500
    assert body["currency"] == "EUR"
    assert body["already_completed"] is False
    assert [o.id for o in api.shop.orders(cart_id)] == [body["order_id"]]
    checkout = ok(api.client.get(f"/checkouts/{body['checkout_id']}"))
    assert checkout["correlation_id"] == "req-checkout-1"
    assert checkout["status"] == "completed"
    assert checkout["order_id"] == body["order_id"]
    assert checkout["history"][-1]["to_state"] == "completed"
    assert api.shop.stock(sku).reserved == 2


@BACKENDS
def test_completing_a_completed_cart_returns_its_order(api: Api) -> None:
    cart_id = api.cart()
    first = ok(api.complete(cart_id))

    again = ok(api.complete(cart_id))

    assert again["already_completed"] is True
    assert again["order_id"] == first["order_id"]
    assert again["checkout_id"] == first["checkout_id"]
    assert len(api.shop.orders(cart_id)) == 1


def test_a_request_without_a_usable_request_id_gets_a_new_one(api: Api) -> None:
    cart_id = api.cart()
    unusable = api.complete(cart_id, request_id="x" * 129)
    missing = api.complete(cart_id)

    for response in (unusable, missing):
        ok(response)
        assert len(response.headers["x-request-id"]) == 32  # a uuid4, in hex
    assert unusable.headers["x-request-id"] != missing.headers["x-request-id"]


def test_unknown_cart_is_404(api: Api) -> None:
    response = api.complete("no-such-cart", request_id="req-404")

    body = problem(response, 404)
    assert response.headers["x-request-id"] == "req-404"
    assert body["type"] == "/problems/cart-not-found"
    assert body["cart_id"] == "no-such-cart"
    assert body["instance"] == "/carts/no-such-cart/complete"
    explained = ok(api.client.get(body["type"]))
    assert explained["status"] == 404


def test_empty_cart_is_422(api: Api) -> None:
    cart_id = api.cart({})

    body = problem(api.complete(cart_id), 422)

    assert body["type"] == "/problems/invalid-cart"
    assert "empty" in body["detail"]
    assert body["checkout_status"] == "compensated"


def test_insufficient_stock_is_422_with_the_sku(api: Api) -> None:
    plenty, scarce = api.product(stock=10), api.product(stock=1)
    cart_id = api.cart({plenty: 1, scarce: 3})

    body = problem(api.complete(cart_id), 422)

    assert body["type"] == "/problems/insufficient-stock"
    assert (body["sku"], body["requested"], body["available"]) == (scarce, 3, 1)
    assert api.shop.stock(plenty).reserved == 0  # nothing was kept


def test_declined_payment_is_402_and_compensated(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 1}, method="card_declined")

    body = problem(api.complete(cart_id), 402)

    assert body["type"] == "/problems/payment-declined"
    assert body["checkout_status"] == "compensated"
    assert api.shop.stock(sku).reserved == 0
    assert api.shop.orders(cart_id) == []


def test_passed_deadline_is_504_and_compensated(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 1}, method="card_stall")

    body = problem(api.complete(cart_id), 504)

    assert body["type"] == "/problems/checkout-timed-out"
    checkout = ok(api.client.get(f"/checkouts/{body['checkout_id']}"))
    assert checkout["status"] == "compensated"
    assert checkout["error"]["code"] == "checkout-timed-out"
    assert api.shop.stock(sku).reserved == 0
    assert [call.operation for call in api.provider.calls] == ["authorize", "cancel"]


def test_a_failed_checkout_is_500_without_its_internals(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 1}, method="card_broken")

    body = problem(api.complete(cart_id), 500)

    assert body["type"] == "/problems/checkout-failed"
    assert "secret-internal-detail" not in str(body)
    assert body["checkout_status"] == "compensated"
    assert api.shop.stock(sku).reserved == 0
    # the storefront sees a code and a sentence; the run keeps what went wrong, for operators
    checkout = api.client.get(f"/checkouts/{body['checkout_id']}")
    assert ok(checkout)["error"]["code"] == "checkout-failed"
    assert "secret-internal-detail" not in checkout.text
    assert "RuntimeError" not in checkout.text
    recorded = api.shop.checkout(body["checkout_id"]).error
    assert recorded is not None
    assert "secret-internal-detail" in recorded.message


def test_an_unexpected_error_is_500_problem_with_the_request_id(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(cart_id: str, *, correlation_id: str | None = None) -> None:
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(api.shop, "complete", broken)

    response = api.complete("any-cart", request_id="req-500")

    body = problem(response, 500)
    assert body["type"] == "about:blank"
    assert response.headers["x-request-id"] == "req-500"
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text


# -- 3-D Secure and the webhook ----------------------------------------------------------------


@BACKENDS
def test_three_d_secure_waits_then_the_webhook_completes_the_checkout(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 1}, method="card_3ds")

    waiting = api.complete(cart_id)
    body = ok(waiting, 202)
    assert body["status"] == "requires_action"
    assert waiting.headers["location"] == f"/checkouts/{body['checkout_id']}"

    busy = problem(api.complete(cart_id), 409)
    assert busy["type"] == "/problems/checkout-in-progress"
    assert busy["checkout_id"] == body["checkout_id"]

    event = api.provider.finish_action(body["provider_ref"], succeeded=True)
    delivered = ok(api.deliver(event))
    assert (delivered["delivery"], delivered["duplicate"]) == ("accepted", False)
    assert delivered["event_id"] == event.id
    assert delivered["checkout"]["status"] == "completed"

    checkout = ok(api.client.get(waiting.headers["location"]))
    assert checkout["status"] == "completed"
    assert checkout["order_id"] is not None
    path = [(entry["kind"], entry["to_state"]) for entry in checkout["history"]]
    assert ("forward", "awaiting_payment") in path
    assert ("event", "authorized") in path
    assert path[-1] == ("forward", "completed")
    assert [o.id for o in api.shop.orders(cart_id)] == [checkout["order_id"]]


def test_a_failed_webhook_compensates_the_checkout(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 2}, method="card_3ds")
    body = ok(api.complete(cart_id), 202)
    assert api.shop.stock(sku).reserved == 2

    event = api.provider.finish_action(body["provider_ref"], succeeded=False)
    delivered = ok(api.deliver(event))

    assert delivered["checkout"]["status"] == "compensated"
    checkout = ok(api.client.get(f"/checkouts/{body['checkout_id']}"))
    assert checkout["status"] == "compensated"
    assert checkout["error"]["code"] == "payment-failed"
    assert checkout["order_id"] is None
    assert api.shop.stock(sku).reserved == 0
    assert api.provider.status(body["provider_ref"]) == "canceled"


def test_a_duplicate_webhook_is_acknowledged_and_orders_once(api: Api) -> None:
    cart_id = api.cart(method="card_3ds")
    body = ok(api.complete(cart_id), 202)
    event = api.provider.finish_action(body["provider_ref"])

    first = ok(api.deliver(event))
    second = ok(api.deliver(event))

    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert first["checkout"]["status"] == second["checkout"]["status"] == "completed"
    assert first["checkout"]["order_id"] == second["checkout"]["order_id"]
    assert len(api.shop.orders(cart_id)) == 1


# -- looking a checkout up ---------------------------------------------------------------------


def test_unknown_checkout_is_404(api: Api) -> None:
    response = api.client.get("/checkouts/no-such-checkout", headers={"X-Request-ID": "r-1"})

    body = problem(response, 404)
    assert response.headers["x-request-id"] == "r-1"
    assert body["type"] == "/problems/checkout-not-found"
    assert body["instance"] == "/checkouts/no-such-checkout"


def test_an_unknown_route_is_a_problem_too(api: Api) -> None:
    assert problem(api.client.get("/carts"), 404)["type"] == "about:blank"
    assert problem(api.client.get("/carts/c-1/complete"), 405)["title"] == "Method Not Allowed"


def test_every_problem_type_is_explained(api: Api) -> None:
    for name, kind in PROBLEM_TYPES.items():
        explained = ok(api.client.get(kind.uri))
        assert explained["type"] == f"/problems/{name}"
        assert explained["status"] == kind.status
        assert explained["description"]
    problem(api.client.get("/problems/no-such-problem"), 404)


# -- concurrency -------------------------------------------------------------------------------


@BACKENDS
def test_two_concurrent_completes_of_one_cart_one_waits_one_is_told_busy(api: Api) -> None:
    cart_id = api.cart(method="card_3ds")
    barrier = threading.Barrier(2)

    def complete(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            barrier.wait()
            return client.post(f"/carts/{cart_id}/complete")

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(complete, range(2)))

    assert sorted(r.status_code for r in responses) == [202, 409]
    accepted = next(r for r in responses if r.status_code == 202)
    refused = next(r for r in responses if r.status_code == 409)
    assert problem(refused, 409)["checkout_id"] == ok(accepted, 202)["checkout_id"]
    assert len(api.shop.payments(cart_id)) == 0
    assert len(api.provider.calls) == 1
