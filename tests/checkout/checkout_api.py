"""The checkout API served for a test: uvicorn on 127.0.0.1, an httpx client, a controllable clock.

Each test gets its own shop and server: a new SQLite file, or (for the main
paths) this session's PostgreSQL schema, where unique SKUs and cart ids keep
the tests apart. The shop's engine runs on a clock the test controls, so a
passed deadline needs no waiting. Test modules import the fixtures
(``backend``, ``api``) from here.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from definitions.checkout import PaymentRequest, Shop, SimulatedProvider, WebhookEvent
from definitions.checkout.http import create_app
from definitions.checkout.provider import Authorization
from definitions.checkout.signing import SIGNATURE_HEADER, sign
from statesaga.testing import FakeClock

PROBLEM = "application/problem+json"
JSON = "application/json"
BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


class Provider(SimulatedProvider):
    """The simulated provider plus two test cards.

    ``card_stall``: the bank answers yes, a minute after being asked (the clock jumps);
    ``card_broken``: the provider's client raises an error no one planned for.
    """

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def authorize(self, request: PaymentRequest) -> Authorization:
        if request.payment_method == "card_stall":
            self.clock.advance(61)  # past the checkout's 60-second deadline
        if request.payment_method == "card_broken":
            raise RuntimeError("provider client bug: secret-internal-detail")
        return super().authorize(request)


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn on a free port of 127.0.0.1; its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.005)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@attrs.frozen
class Api:
    client: httpx.Client
    shop: Shop
    provider: Provider
    clock: FakeClock
    url: str

    def product(self, stock: int = 10, unit_price: int = 1250) -> str:
        """A new product (its SKU unique to this test)."""
        sku = f"mug-{uuid.uuid4().hex[:10]}"
        self.shop.add_product(sku, "Enamel mug", unit_price=unit_price, stock=stock)
        return sku

    def cart(self, items: dict[str, int] | None = None, method: str = "card_ok") -> str:
        if items is None:
            items = {self.product(): 2}
        return self.shop.create_cart(items, payment_method=method)

    def complete(self, cart_id: str, request_id: str | None = None) -> httpx.Response:
        headers = {} if request_id is None else {"X-Request-ID": request_id}
        return self.client.post(f"/carts/{cart_id}/complete", headers=headers)

    def deliver(self, event: WebhookEvent, client: httpx.Client | None = None) -> httpx.Response:
        """Post ``event`` as the provider does: signed with the shared secret."""
        delivery = self.provider.signed(event)
        return (client or self.client).post(
            "/payments/webhook", content=delivery.body, headers=delivery.headers
        )

    def post_signed(
        self, body: bytes, secret: str | None = None, **sign_options: Any
    ) -> httpx.Response:
        """Post ``body`` (any bytes) signed with ``secret`` (the provider's by default)."""
        header = sign(body, secret or self.provider.webhook_secret, **sign_options)
        return self.client.post(
            "/payments/webhook",
            content=body,
            headers={SIGNATURE_HEADER: header, "Content-Type": "application/json"},
        )


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """The shop's database: a new SQLite file, or this session's PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'shop.db')}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def api(backend: str) -> Iterator[Api]:
    clock = FakeClock.running()
    provider = Provider(clock)
    with Shop.open(backend, provider=provider, clock=clock) as shop:
        app = create_app(shop, webhook_secret=provider.webhook_secret)
        try:
            with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
                yield Api(client, shop, provider, clock, url)
        finally:
            provider.close()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem details body, after checking the status and both content types."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "code", "title", "detail", "instance", "request_id"} <= body.keys()
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON
    body: dict[str, Any] = response.json()
    return body
