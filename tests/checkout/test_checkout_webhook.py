"""The webhook's signature and the provider's word, and bad input anywhere: never a 500.

Through a real server (uvicorn on 127.0.0.1) and httpx clients, as in
``test_checkout_http``. A forged, replayed or premature webhook changes
nothing; a malformed request is a 4xx problem naming its field, with nothing
written; the store or the locks out of reach is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from checkout_api import BACKENDS, Api, Provider, api, backend, ok, problem, serve

from definitions.checkout import Shop, WebhookEvent
from definitions.checkout.http import create_app
from definitions.checkout.models import create_tables
from definitions.checkout.signing import SIGNATURE_HEADER, sign
from statesaga import Engine
from statesaga.locks import RedisLocks
from statesaga.store import SqlStore
from statesaga.testing import FakeClock

__all__ = ["api", "backend"]  # the fixtures, imported for pytest


def nothing_written(api: Api) -> None:
    """No checkout ran, no payment or order was booked."""
    assert api.shop.engine.list() == []
    assert api.shop.payments() == []
    assert api.shop.orders() == []


# -- signatures --------------------------------------------------------------------------------


def test_an_unsigned_webhook_is_400_and_changes_nothing(api: Api) -> None:
    event = WebhookEvent("pi_1", "cart-1", "succeeded", id="evt_1")

    body = problem(api.client.post("/payments/webhook", content=event.body()), 400)

    assert body["code"] == "missing-signature"
    assert body["field"] == SIGNATURE_HEADER
    nothing_written(api)


@pytest.mark.parametrize(
    "header",
    [
        b"v1=abc",
        b"t=abc,v1=abc",
        b"t=1700000000",
        b"t=1,t=2,v1=a",
        "t=1,v1=é".encode(),
        b"x" * 2000,
    ],
)
def test_a_malformed_signature_is_400(api: Api, header: bytes) -> None:
    event = WebhookEvent("pi_1", "cart-1", "succeeded", id="evt_1")
    response = api.client.post(
        "/payments/webhook", content=event.body(), headers={SIGNATURE_HEADER: header}
    )

    assert problem(response, 400)["code"] == "malformed-signature"


def test_a_signature_with_another_secret_or_over_another_body_is_401(api: Api) -> None:
    event = WebhookEvent("pi_1", "cart-1", "succeeded", id="evt_1")

    guessed = api.post_signed(event.body(), secret="whsec_guessed")
    delivery = api.provider.signed(event)
    altered = api.client.post(
        "/payments/webhook",
        content=delivery.body.replace(b"pi_1", b"pi_2"),
        headers=delivery.headers,
    )

    assert problem(guessed, 401)["code"] == "invalid-signature"
    assert problem(altered, 401)["code"] == "invalid-signature"
    nothing_written(api)


def test_a_replayed_or_future_signature_is_401(api: Api) -> None:
    body = WebhookEvent("pi_1", "cart-1", "succeeded", id="evt_1").body()
    now = int(time.time())

    # well outside the 300 s window: a second boundary crossed between reading the time
    # and the server checking it must not bring a timestamp back inside
    replayed = api.post_signed(body, timestamp=now - 400)
    future = api.post_signed(body, timestamp=now + 400)

    assert problem(replayed, 401)["code"] == "stale-signature"
    assert problem(future, 401)["code"] == "stale-signature"


# -- the provider's word -------------------------------------------------------------------------


@BACKENDS
def test_a_webhook_forged_from_the_202_answer_never_creates_an_order(api: Api) -> None:
    sku = api.product(stock=5)
    cart_id = api.cart({sku: 1}, method="card_3ds")
    waiting = ok(api.complete(cart_id), 202)
    forged = WebhookEvent(waiting["provider_ref"], cart_id, "succeeded", id="evt_forged")

    unsigned = api.client.post("/payments/webhook", content=forged.body())
    guessed = api.post_signed(forged.body(), secret="whsec_guessed")
    # even signed with the real secret (leaked, or the provider's own premature delivery),
    # the provider still holds the payment as requires_action: nothing is recorded
    premature = api.deliver(forged)
    failure = api.deliver(WebhookEvent(waiting["provider_ref"], cart_id, "failed", id="evt_f"))

    assert problem(unsigned, 400)["code"] == "missing-signature"
    assert problem(guessed, 401)["code"] == "invalid-signature"
    refused = problem(premature, 409)
    assert refused["code"] == "payment-not-settled"
    assert "requires_action" in refused["detail"]
    assert problem(failure, 409)["code"] == "payment-not-settled"
    assert api.shop.payments(cart_id) == []
    assert api.shop.orders(cart_id) == []
    run = api.shop.checkout(waiting["checkout_id"])
    assert (run.status.value, run.state) == ("waiting", "awaiting_payment")
    assert all(entry.event is None for entry in run.history)
    assert api.provider.status(waiting["provider_ref"]) == "requires_action"
    # the customer's real confirmation still completes the checkout
    real = api.provider.finish_action(waiting["provider_ref"])
    assert ok(api.deliver(real))["checkout"]["status"] == "completed"
    assert len(api.shop.orders(cart_id)) == 1


def test_a_webhook_for_a_payment_the_provider_does_not_know_is_409(api: Api) -> None:
    event = WebhookEvent("pi_unknown", "no-such-cart", "succeeded", id="evt_unknown")

    body = problem(api.deliver(event), 409)

    assert body["code"] == "payment-not-settled"
    nothing_written(api)


# -- bad input: a 4xx naming the field, nothing written --------------------------------------

_VALID = b'{"id":"evt_1","provider_ref":"pi_1","reference":"cart-1","status":"succeeded"}'


@pytest.mark.parametrize(
    ("content", "field", "says"),
    [
        (b"{not json", None, "not JSON"),
        (
            b'{"id":"e","reference":"cart-1","status":"succeeded"}',
            "provider_ref",
            "no provider_ref",
        ),
        (_VALID.replace(b'"succeeded"', b'"maybe"'), "status", "succeeded or failed"),
        (b'["provider_ref", "reference", "status"]', None, "an array"),
        (b"null", None, "null"),
        (_VALID.replace(b'"pi_1"', b"null"), "provider_ref", "not null"),
        (_VALID.replace(b'"pi_1"', b"42"), "provider_ref", "not a number"),
        (_VALID.replace(b'"pi_1"', b"4.2e999"), "provider_ref", "not a number"),
        (_VALID.replace(b'"pi_1"', b'{"ref": "pi_1"}'), "provider_ref", "not an object"),
        (_VALID.replace(b'"pi_1"', b"true"), "provider_ref", "not a boolean"),
        (_VALID.replace(b'"cart-1"', b'"cart-\\u0000-1"'), "reference", "control character"),
        (_VALID.replace(b'"evt_1"', b'"' + b"e" * 129 + b'"'), "id", "longer than 128"),
        (_VALID.replace(b'"evt_1"', b'""'), "id", "empty"),
        (_VALID.replace(b'"pi_1"', b"9" * 5000), None, "number too large"),
        (b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "nests too deeply"),
    ],
)
def test_a_malformed_webhook_is_422_naming_the_field(
    api: Api, content: bytes, field: str | None, says: str
) -> None:
    body = problem(api.post_signed(content), 422)

    assert body["code"] == "invalid-webhook"
    assert body.get("field") == field
    assert says in body["detail"]
    nothing_written(api)


def test_an_oversized_webhook_is_413(api: Api) -> None:
    response = api.post_signed(b" " * (65 * 1024))

    assert problem(response, 413)["code"] == "payload-too-large"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/carts/cart%00-1/complete", "cart_id"),
        ("/carts/cart%0A-1/complete", "cart_id"),
        (f"/carts/{'c' * 129}/complete", "cart_id"),
        ("/checkouts/abc%00def", "checkout_id"),
        (f"/checkouts/{'9' * 10_000}", "checkout_id"),
    ],
)
def test_an_unusable_id_is_422_naming_it(api: Api, path: str, field: str) -> None:
    method = "POST" if path.endswith("/complete") else "GET"

    body = problem(api.client.request(method, path), 422)

    assert (body["code"], body["field"]) == ("invalid-request", field)
    nothing_written(api)


@BACKENDS
def test_concurrent_clients_sending_bad_input_never_get_a_500(api: Api) -> None:
    cart_id = api.cart(method="card_3ds")
    runs_before = len(api.shop.engine.list(limit=100_000))
    requests: list[tuple[str, str, bytes | None]] = [
        ("POST", "/carts/%00/complete", None),
        ("POST", f"/carts/{'x' * 5000}/complete", None),
        ("GET", "/checkouts/%00", None),
        ("GET", "/checkouts/%ED%A0%80", None),
        ("POST", "/payments/webhook", b'{"id": ' + b"[" * 20000 + b"]" * 20000 + b"}"),
        ("POST", "/payments/webhook", _VALID.replace(b'"cart-1"', b'"\\u0000"')),
        ("POST", "/payments/webhook", _VALID.replace(b'"pi_1"', b"1" * 4301)),
        ("POST", f"/carts/{cart_id}/complete", None),  # a real one among them
    ]

    def send(index: int) -> httpx.Response:
        method, path, content = requests[index % len(requests)]
        headers = {}
        if content is not None and index % 2 == 0:  # signed: it reaches the body's checks
            headers[SIGNATURE_HEADER] = sign(content, api.provider.webhook_secret)
        with httpx.Client(base_url=api.url, timeout=30) as client:
            return client.request(method, path, content=content, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(64)))

    assert [r.text for r in responses if r.is_server_error] == []
    problems = [r for r in responses if r.status_code not in (202, 409)]
    assert {r.headers["content-type"] for r in problems} == {"application/problem+json"}
    assert {r.status_code for r in problems} <= {400, 404, 413, 422}
    # the real checkout, and nothing else
    assert len(api.shop.engine.list(limit=100_000)) == runs_before + 1


# -- unavailable: 503 with Retry-After ----------------------------------------------------------


def test_a_locked_database_is_503_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    provider = Provider(FakeClock.running())
    engine = Engine(SqlStore(f"sqlite:///{path}", busy_timeout=0.2), resources=[provider])
    create_tables(engine.store.engine)  # type: ignore[attr-defined]
    with Shop(engine) as shop:
        shop.add_product("mug", "Enamel mug", unit_price=1250, stock=5)
        cart_id = shop.create_cart({"mug": 1})
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            with serve(create_app(shop, webhook_secret="whsec_test")) as url:
                holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
                with httpx.Client(base_url=url, timeout=30) as client:
                    response = client.post(f"/carts/{cart_id}/complete")
                holder.execute("ROLLBACK")
        finally:
            holder.close()
            provider.close()
        body = problem(response, 503)
        assert body["code"] == "service-unavailable"
        assert response.headers["retry-after"] == "2"
        assert "locked" not in response.text
        assert "INSERT" not in response.text
        assert shop.orders(cart_id) == []


def test_unreachable_entity_locks_are_503_with_retry_after(tmp_path: Path) -> None:
    provider = Provider(FakeClock.running())
    locks = RedisLocks("redis://127.0.0.1:1/0", namespace=f"test:{uuid.uuid4().hex}:")
    with Shop.open(f"sqlite:///{tmp_path / 'shop.db'}", provider=provider, locks=locks) as shop:
        shop.add_product("mug", "Enamel mug", unit_price=1250, stock=5)
        cart_id = shop.create_cart({"mug": 1})
        with (
            serve(create_app(shop, webhook_secret="whsec_test")) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            response = client.post(f"/carts/{cart_id}/complete")
        provider.close()
        assert problem(response, 503)["code"] == "service-unavailable"
        assert response.headers["retry-after"] == "2"
        assert shop.engine.list() == []
