"""The checkout answers with the stock level its reservation saw, not what a later query finds.

Its ``InsufficientStock`` is rebuilt from the step's structured failure (kind and
details), so a restock between the step and the answer changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from checkout_api import BACKENDS, backend, problem, serve

from definitions.checkout import InsufficientStock, Shop, SimulatedProvider
from definitions.checkout.http import create_app
from definitions.checkout.models import InventoryItem
from statesaga.observability import Observer

__all__ = ["backend"]  # the fixture BACKENDS parametrises


# -- the checkout answers with what its reservation saw --------------------------------------------


def _restock(shop: Shop, sku: str, stocked: int) -> None:
    with shop.database.begin() as connection:
        connection.execute(
            sa.update(InventoryItem).where(InventoryItem.sku == sku).values(stocked=stocked)
        )


@BACKENDS
def test_the_shop_reports_the_stock_the_step_saw_after_a_restock(backend: str) -> None:
    with Shop.open(backend, provider=SimulatedProvider()) as shop:
        sku = f"mug-{uuid.uuid4().hex[:10]}"
        shop.add_product(sku, "Enamel mug", unit_price=1250, stock=1)
        cart_id = shop.create_cart({sku: 2})
        with pytest.raises(InsufficientStock) as short:
            shop.complete(cart_id)
        _restock(shop, sku, 10)

        with pytest.raises(InsufficientStock) as again:
            shop.result(shop.checkout(short.value.run.id))

    for error in (short.value, again.value):
        assert (error.sku, error.requested, error.available, error.cart_id) == (sku, 2, 1, cart_id)


class Restocker(Observer):
    """Puts stock on the shelf as soon as a checkout ends: before the shop answers."""

    def __init__(self) -> None:
        self.shop: Shop | None = None
        self.sku = ""

    def run_finished(self, **report: Any) -> None:
        assert self.shop is not None
        _restock(self.shop, self.sku, 10)


@BACKENDS
def test_the_422_for_insufficient_stock_reports_what_the_step_saw(backend: str) -> None:
    restocker = Restocker()
    provider = SimulatedProvider()
    with Shop.open(backend, provider=provider, observer=restocker) as shop:
        restocker.shop = shop
        restocker.sku = sku = f"mug-{uuid.uuid4().hex[:10]}"
        shop.add_product(sku, "Enamel mug", unit_price=1250, stock=1)
        cart_id = shop.create_cart({sku: 3})
        app = create_app(shop, webhook_secret=provider.webhook_secret)
        with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            body = problem(client.post(f"/carts/{cart_id}/complete"), 422)
        now = shop.stock(sku)

    assert body["type"] == "/problems/insufficient-stock"
    assert (body["sku"], body["requested"], body["available"]) == (sku, 3, 1)
    assert now.available == 10  # restocked before the answer: a new query would say 10
