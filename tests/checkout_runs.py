"""Real runs of the shop's checkout, for the tests that draw them.

:func:`open_shop` opens a :class:`~definitions.checkout.Shop` (in-memory SQLite
unless told otherwise) with one product on sale and a simulated payment
provider; :meth:`Checkouts.complete` checks out a new cart and returns the run
with its history, whatever the outcome. The payment method picks the
provider's answer: ``card_ok`` completes, ``card_declined`` compensates,
``card_3ds`` waits for the webhook (:meth:`Checkouts.webhook`).

>>> with open_shop() as checkouts:
...     run = checkouts.complete("card_ok")
>>> (run.status.value, run.state)
('completed', 'completed')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from definitions.checkout import CheckoutError, Shop, SimulatedProvider
from statesaga import Run


@attrs.frozen
class Checkouts:
    """A shop with a mug on sale, and the simulated provider its checkouts pay with."""

    shop: Shop
    provider: SimulatedProvider

    def complete(self, payment_method: str = "card_ok", *, quantity: int = 2) -> Run:
        """Check out a new cart of ``quantity`` mugs: the run, history included."""
        cart_id = self.shop.create_cart({"mug": quantity}, payment_method=payment_method)
        try:
            run = self.shop.complete(cart_id).run
        except CheckoutError as error:  # declined, timed out...: the run says where it stopped
            run = error.run
        assert run is not None
        return self.get(run.id)

    def webhook(self, run: Run, *, succeeded: bool = True) -> Run:
        """The customer finished (or abandoned) 3-D Secure: the provider's webhook arrives."""
        assert run.data.provider_ref is not None, "only a checkout waiting for 3-D Secure"
        self.shop.payment_webhook(
            self.provider.finish_action(run.data.provider_ref, succeeded=succeeded)
        )
        return self.get(run.id)

    def get(self, run_id: str) -> Run:
        """A run as stored now, history included."""
        return self.shop.engine.get(run_id)


@contextmanager
def open_shop(
    database: str = "sqlite://", *, clock: Callable[[], float] | None = None
) -> Iterator[Checkouts]:
    """A shop on ``database`` with 10 mugs at 12.50 EUR; closed when the block ends."""
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    provider = SimulatedProvider()
    with Shop.open(database, provider=provider, **options) as shop:
        shop.add_product("mug", "Enamel mug", unit_price=1250, stock=10)
        yield Checkouts(shop, provider)
