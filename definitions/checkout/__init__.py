"""The shop's checkout: the complete-cart saga, its tables, its payment provider, its API.

- :mod:`~definitions.checkout.saga`: the ``CompleteCart`` saga and its steps;
- :mod:`~definitions.checkout.models`: the shop's tables (SQLAlchemy ORM);
- :mod:`~definitions.checkout.provider`: the payment provider interface and a simulated one;
- :mod:`~definitions.checkout.shop`: :class:`Shop`, what the API, demo and tests call;
- :mod:`~definitions.checkout.http`: the HTTP API (an ASGI app; ``statesaga[http]``);
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
from definitions.checkout.shop import CheckoutResult, Shop, StockLevel, cart_key

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
    "PaymentProvider",
    "PaymentRequest",
    "ProviderUnavailable",
    "Shop",
    "SimulatedProvider",
    "StockLevel",
    "WebhookEvent",
    "cart_key",
    "resources",
]


def resources() -> list[object]:
    """What the checkout's steps need from the engine: here, a simulated payment provider.

    The command line passes it with ``--resources definitions.checkout:resources``
    (``statesaga worker``, ``start``, ``send``...); a real shop returns its provider client.
    """
    return [SimulatedProvider()]
