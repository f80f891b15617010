"""The shop's checkout: the complete-cart saga, its tables, its payment provider, its API.

- :mod:`~definitions.checkout.saga`: the ``CompleteCart`` saga and its steps;
- :mod:`~definitions.checkout.models`: the shop's tables (SQLAlchemy ORM);
- :mod:`~definitions.checkout.provider`: the payment provider interface and a simulated one;
- :mod:`~definitions.checkout.shop`: :class:`Shop`, what the API, demo and tests call;
- :mod:`~definitions.checkout.provider_service`, :mod:`~definitions.checkout.provider_client`:
  the simulated provider as an HTTP service, and the client every process reaches it with;
- :mod:`~definitions.checkout.signing`, :mod:`~definitions.checkout.webhooks`: webhook
  signatures (HMAC-SHA256, a replay window), and a verified webhook to the checkout's inbox;
- :mod:`~definitions.checkout.http`: the HTTP API (an ASGI app; ``statesaga[http]``), with
  :mod:`~definitions.checkout.problems`, :mod:`~definitions.checkout.validation` and
  :mod:`~definitions.checkout.serve` (the server process);
- :mod:`~definitions.checkout.errors`: the business errors and their HTTP statuses.
"""

from definitions.checkout.errors import (
    CartAlreadyCompleted,
    CartNotFound,
    CheckoutError,
    CheckoutFailed,
    CheckoutInProgress,
    CheckoutTimedOut,
    InsufficientStock,
    InvalidCart,
    PaymentDeclined,
    PaymentNotSettled,
)
from definitions.checkout.provider import (
    PaymentProvider,
    PaymentRequest,
    ProviderUnavailable,
    SimulatedProvider,
    WebhookEvent,
)
from definitions.checkout.saga import (
    CheckoutData,
    CheckoutReceipt,
    CompleteCart,
    CompleteCartInput,
    LineSnapshot,
    PaymentConfirmed,
)
from definitions.checkout.shop import CheckoutResult, Shop, StockLevel, WebhookReceipt, cart_key

__all__ = [
    "CartAlreadyCompleted",
    "CartNotFound",
    "CheckoutData",
    "CheckoutError",
    "CheckoutFailed",
    "CheckoutInProgress",
    "CheckoutReceipt",
    "CheckoutResult",
    "CheckoutTimedOut",
    "CompleteCart",
    "CompleteCartInput",
    "InsufficientStock",
    "InvalidCart",
    "LineSnapshot",
    "PaymentConfirmed",
    "PaymentDeclined",
    "PaymentNotSettled",
    "PaymentProvider",
    "PaymentRequest",
    "ProviderUnavailable",
    "Shop",
    "SimulatedProvider",
    "StockLevel",
    "WebhookEvent",
    "WebhookReceipt",
    "cart_key",
    "resources",
]


def resources() -> list[object]:
    """What the checkout's steps need from the engine: the payment provider.

    The command line passes it with ``--resources definitions.checkout:resources``
    (``statesaga worker``, ``start``, ``send``...). With ``CHECKOUT_PROVIDER_URL`` set
    it is a client of the provider service every process shares
    (:class:`~definitions.checkout.provider_client.HttpProvider`); without, a simulated
    provider of this process's own (one process only: no other knows its payments).
    """
    import os

    from definitions.checkout.provider_client import PROVIDER_URL_ENV, HttpProvider

    url = os.environ.get(PROVIDER_URL_ENV, "").strip()
    return [HttpProvider(url)] if url else [SimulatedProvider()]
