"""The checkout's business errors, and what the HTTP API answers for each.

::

    CheckoutError                  (500)
    ├── CartNotFound               (404) no cart with that id
    ├── CheckoutInProgress         (409) another complete of this cart is running or waiting
    ├── InvalidCart                (422) empty, bad quantities, stale prices, mixed currencies
    │   └── CartAlreadyCompleted   (422 from a step; the shop answers with the existing order)
    ├── InsufficientStock          (422) a SKU has fewer units available than the cart wants
    ├── PaymentDeclined            (402) the provider declined, or the customer failed 3-D Secure
    ├── PaymentNotSettled          (409) a webhook says what the provider does not hold (yet)
    ├── CheckoutTimedOut           (504) the deadline, the webhook wait or the provider timed out
    └── CheckoutFailed             (500) anything else; the run id says where to look

The ones a step raises are :class:`~statesaga.NonRetryableError` as well:
retrying cannot make them succeed, so the saga compensates at once.
"""

from __future__ import annotations

from typing import Any

from statesaga import ErrorInfo, NonRetryableError
from statesaga.failures import rebuild

__all__ = [
    "CartAlreadyCompleted",
    "CartNotFound",
    "CheckoutError",
    "CheckoutFailed",
    "CheckoutInProgress",
    "CheckoutTimedOut",
    "InsufficientStock",
    "InvalidCart",
    "PaymentDeclined",
    "PaymentNotSettled",
    "STEP_ERRORS",
    "step_error",
]


class CheckoutError(NonRetryableError):
    """Root of the checkout's errors; ``status`` is the HTTP status the API answers with.

    ``run`` is the checkout run it ended (a ``statesaga.Run``), when there is one.
    """

    status = 500
    title = "checkout failed"

    def __init__(self, message: str, *, cart_id: str | None = None, run: Any = None) -> None:
        super().__init__(message, key=None if cart_id is None else f"cart:complete:{cart_id}")
        self.cart_id = cart_id
        self.run = run


class CartNotFound(CheckoutError):
    """No cart with that id."""

    status = 404
    title = "cart not found"


class CheckoutInProgress(CheckoutError):
    """Another complete of this cart is running (or waiting for its payment)."""

    status = 409
    title = "checkout already in progress"


class InvalidCart(CheckoutError):
    """The cart cannot be checked out as it is."""

    status = 422
    title = "invalid cart"


class CartAlreadyCompleted(InvalidCart):
    """The cart was completed meanwhile; the shop answers with its order."""


class InsufficientStock(CheckoutError):
    """A SKU has fewer units available than the cart asks for."""

    status = 422
    title = "insufficient stock"

    def __init__(
        self,
        message: str,
        *,
        sku: str | None = None,
        requested: int | None = None,
        available: int | None = None,
        cart_id: str | None = None,
        run: Any = None,
    ) -> None:
        super().__init__(message, cart_id=cart_id, run=run)
        self.sku = sku
        self.requested = requested
        self.available = available


class PaymentDeclined(CheckoutError):
    """The provider declined the payment (or the customer failed its confirmation)."""

    status = 402
    title = "payment declined"


class PaymentNotSettled(CheckoutError):
    """The provider does not hold the payment as the webhook says: nothing was recorded.

    The payment still requires action, or the provider knows no such payment
    (a forged or premature delivery). A provider delivers again later.
    """

    status = 409
    title = "payment not settled"


class CheckoutTimedOut(CheckoutError):
    """The checkout's deadline, or its wait for the payment webhook, passed."""

    status = 504
    title = "checkout timed out"


class CheckoutFailed(CheckoutError):
    """The checkout failed for another reason; its run records the error."""


STEP_ERRORS: tuple[type[CheckoutError], ...] = (
    CartNotFound,
    InvalidCart,
    CartAlreadyCompleted,
    InsufficientStock,
    PaymentDeclined,
)
"""The business errors the checkout's steps raise."""


def step_error(error: ErrorInfo | None) -> CheckoutError | None:
    """The business error a step raised, rebuilt from the run's recorded ``error``.

    It holds the values the step saw: an :class:`InsufficientStock` the stock
    level at the time the step fell short, not as it is now.
    ``None`` when the run did not end with one of :data:`STEP_ERRORS`.

    >>> from statesaga.failures import capture
    >>> short = InsufficientStock("only 1 left", sku="mug", requested=2, available=1)
    >>> again = step_error(capture(short, retryable=False))
    >>> type(again).__name__, again.sku, again.requested, again.available
    ('InsufficientStock', 'mug', 2, 1)
    """
    return None if error is None else rebuild(error, STEP_ERRORS)
