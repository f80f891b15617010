"""The bounded client of ``load_faults.py``: a storefront and a provider's customer over httpx.

Every answer is counted by scenario and kind (``complete 409``, ``webhook
200``...). A 5xx is a failure unless it is a 503 with ``Retry-After`` (the
shop saying "try again"): those are kept with their body for the report. The
storefront honours ``Retry-After`` a bounded number of times, as a real one
would; a webhook the provider could not deliver is delivered again, as a real
provider's redelivery schedule does.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import sqlalchemy as sa
from load_deploy import Deployment

from definitions.checkout.models import Base

PRODUCTS = (("lf-mug", 1250, 10_000_000), ("lf-tea", 899, 10_000_000), ("lf-scarce", 5000, 20))


class Client:
    """A thread-safe client that counts every answer (see the module)."""

    def __init__(self, deployment: Deployment, connections: int = 96) -> None:
        self.deployment = deployment
        self.http = httpx.Client(
            timeout=60,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._lock = threading.Lock()
        self.answers: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: list[dict[str, Any]] = []  # 5xx other than 503 + Retry-After
        self.transport_errors: list[dict[str, Any]] = []

    def call(
        self, scenario: str, kind: str, method: str, url: str, **options: Any
    ) -> httpx.Response | None:
        try:
            response = self.http.request(method, url, **options)
        except httpx.HTTPError as error:
            with self._lock:
                self.answers[scenario][f"{kind} {type(error).__name__}"] += 1
                self.transport_errors.append(
                    {"scenario": scenario, "kind": kind, "url": url[:200], "error": repr(error)}
                )
            return None
        with self._lock:
            self.answers[scenario][f"{kind} {response.status_code}"] += 1
            if response.status_code >= 500 and not (
                response.status_code == 503 and response.headers.get("retry-after")
            ):
                self.failures.append(
                    {
                        "scenario": scenario,
                        "kind": kind,
                        "url": url[:200],
                        "status": response.status_code,
                        "body": response.text[:500],
                    }
                )
        return response

    def api(self, index: int | None = None) -> str:
        urls = self.deployment.api_urls
        return urls[random.randrange(len(urls)) if index is None else index % len(urls)]

    def complete(
        self, scenario: str, cart_id: str, api: int | None = None, tries: int = 4
    ) -> httpx.Response | None:
        """POST complete, trying again after a 503's Retry-After (bounded)."""
        response = None
        for _ in range(tries):
            response = self.call(
                scenario, "complete", "POST", f"{self.api(api)}/carts/{cart_id}/complete"
            )
            if response is None or response.status_code != 503:
                return response
            time.sleep(min(float(response.headers.get("retry-after", "1")), 2.0))
        return response

    def awaited_action(self, scenario: str, cart_id: str, patience: float = 45.0) -> str | None:
        """A storefront whose ``complete`` did not answer 202 follows the cart's checkout.

        It completes again until it is told which checkout is open (a 409 names
        it), then reads that checkout (``GET /checkouts/{id}``) until it waits for
        the customer's 3-D Secure (its ``provider_ref``, to show the challenge) or
        has ended (``None``), for at most ``patience`` seconds: the time a shopper
        stays on "processing".
        """
        give_up = time.monotonic() + patience
        checkout_id = None
        while checkout_id is None and time.monotonic() < give_up:
            response = self.complete(scenario, cart_id)
            if response is not None and response.status_code == 202:
                return str(response.json()["provider_ref"])
            if response is not None and response.status_code != 409:
                return None  # completed (200) or refused: nothing for the customer to do
            if response is None or response.json().get("checkout_id") is None:
                time.sleep(1.0)
                continue
            checkout_id = response.json()["checkout_id"]
        while checkout_id is not None and time.monotonic() < give_up:
            got = self.call(scenario, "checkout", "GET", f"{self.api()}/checkouts/{checkout_id}")
            if got is not None and got.status_code == 200:
                body = got.json()
                if body["status"] == "waiting" and body["state"] == "awaiting_payment":
                    return str(body["provider_ref"])
                if body["status"] in ("completed", "compensated", "failed"):
                    return None
            time.sleep(1.0)
        return None

    def action(self, scenario: str, provider_ref: str) -> dict[str, Any] | None:
        """The customer confirms 3-D Secure: the provider signs and delivers the webhook."""
        response = self.call(
            scenario,
            "provider action",
            "POST",
            f"{self.deployment.provider_url}/payments/{provider_ref}/action",
            json={"succeeded": True},
        )
        if response is None or response.status_code != 200:
            return None
        answer: dict[str, Any] = response.json()
        delivered = (answer.get("delivered") or {}).get("status")
        with self._lock:
            self.answers[scenario][f"webhook by provider {delivered}"] += 1
            attempt = (answer.get("delivered") or {}).get("attempt") or 0
            if attempt > 1:
                self.answers[scenario]["webhook by provider, redelivered"] += 1
        return answer

    def deliver(self, scenario: str, delivery: dict[str, Any], api: int | None = None) -> int:
        """Post a signed delivery (as the provider does); its status (0: no answer)."""
        response = self.call(
            scenario,
            "webhook",
            "POST",
            f"{self.api(api)}/payments/webhook",
            content=delivery["body"].encode(),
            headers=delivery["headers"],
        )
        return 0 if response is None else response.status_code

    def ensure_delivered(self, scenario: str, answer: dict[str, Any], tries: int = 8) -> bool:
        """Deliver again until an API process takes it (a provider's redelivery schedule)."""
        if 200 <= ((answer.get("delivered") or {}).get("status") or 0) < 300:
            return True
        for attempt in range(tries):
            if 200 <= self.deliver(scenario, answer, attempt) < 300:
                with self._lock:
                    self.answers[scenario]["webhook redelivered by the script"] += 1
                return True
            time.sleep(1.0)
        return False

    def close(self) -> None:
        self.http.close()


def seed_products(db: sa.Engine) -> None:
    """The deployment's products: two plentiful, one scarce (20 units)."""
    table = Base.metadata.tables["shop_inventory"]
    with db.begin() as connection:
        for sku, price, stock in PRODUCTS:
            connection.execute(
                sa.insert(table).values(
                    sku=sku,
                    name=sku,
                    unit_price=price,
                    currency="EUR",
                    stocked=stock,
                    reserved=0,
                    version=1,
                )
            )


def make_carts(
    db: sa.Engine, prefix: str, methods: list[str], scarce_every: int = 0
) -> list[tuple[str, str]]:
    """One open cart per payment method given; ``(cart_id, method)`` each."""
    carts = [(f"{prefix}{i:05d}", method) for i, method in enumerate(methods)]
    rows, lines = [], []
    for index, (cart_id, method) in enumerate(carts):
        rows.append({"id": cart_id, "currency": "EUR", "payment_method": method})
        items = [("lf-mug", 1250, 1), ("lf-tea", 899, 2)]
        if scarce_every and index % scarce_every == 0:
            items.append(("lf-scarce", 5000, 1))
        for sku, price, quantity in items:
            lines.append(
                {
                    "cart_id": cart_id,
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price": price,
                    "currency": "EUR",
                    "version": 1,
                }
            )
    with db.begin() as connection:
        connection.execute(
            sa.insert(Base.metadata.tables["shop_carts"]),
            [{**r, "status": "open", "version": 1} for r in rows],
        )
        connection.execute(sa.insert(Base.metadata.tables["shop_cart_lines"]), lines)
    return carts
