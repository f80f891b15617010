"""The shop's checkout ("complete cart") saga."""

from definitions.checkout.saga import (
    CartLine,
    CheckoutData,
    CheckoutReceipt,
    CompleteCart,
    CompleteCartInput,
    InvalidCart,
    PaymentConfirmed,
    PaymentDeclined,
)

__all__ = [
    "CartLine",
    "CheckoutData",
    "CheckoutReceipt",
    "CompleteCart",
    "CompleteCartInput",
    "InvalidCart",
    "PaymentConfirmed",
    "PaymentDeclined",
]
