"""Version 2 of checkout: a longer 3-D Secure window, and the waiting checkouts of version 1.

Customers lost carts to the 45-second wait for 3-D Secure, so version 2 waits
ten minutes, in a state named for what it waits for (``awaiting_3ds``), under a
longer run deadline. The steps are version 1's. Checkouts already waiting on
version 1 need not drain first: ``migrates_from`` says where they land, and
``statesaga migrate --saga definitions.checkout.saga_v2:CompleteCartV2 --from 1``
moves them (each keeps the deadline and the timer it had).

>>> CompleteCartV2.definition.key
('complete-cart', 2)
>>> dict(CompleteCartV2.definition.migrations[1].states)["awaiting_payment"]
'awaiting_3ds'
"""

from __future__ import annotations

from datetime import timedelta

from definitions.checkout.saga import (
    PROVIDER_RETRY,
    CheckoutData,
    CheckoutReceipt,
    CompleteCart,
    CompleteCartInput,
    PaymentConfirmed,
    authorize_payment,
    cancel_order,
    cancel_payment,
    complete_cart,
    create_order,
    payment_requires_action,
    record_payment,
    release_inventory,
    reopen_cart,
    reserve_inventory,
    validate_cart,
    void_payment,
)
from statesaga import Migration, Saga, State

__all__ = ["CompleteCartV2"]


class CompleteCartV2(Saga[CompleteCartInput, CheckoutData]):
    """Checkout, version 2: ten minutes for 3-D Secure."""

    name = "complete-cart"
    version = 2
    deadline = timedelta(minutes=15)
    # a checkout waiting for 3-D Secure on version 1 waits on here; every other state of
    # version 1 has a state of the same name (the context type is the same, so no function)
    migrates_from = Migration(CompleteCart, states={"awaiting_payment": "awaiting_3ds"})

    new = State(initial=True)
    validated = State()
    reserved = State()
    authorizing = State()
    awaiting_3ds = State(timeout=timedelta(minutes=10))
    authorized = State()
    ordered = State()
    completed = State(final=True)

    validate = new.to(validated).run(validate_cart, read_only=True, transactional=True)
    reserve = validated.to(reserved).run(
        reserve_inventory, undo=release_inventory, transactional=True
    )
    authorize = reserved.to(authorizing).run(
        authorize_payment,
        undo=cancel_payment,
        undo_on_failure=True,  # a timed-out call may have authorized: cancel by its key
        retry=PROVIDER_RETRY,
        undo_retry=PROVIDER_RETRY,
        timeout=timedelta(seconds=5),
    )
    needs_action = authorizing.to(awaiting_3ds).when(payment_requires_action)
    approved = authorizing.to(authorized).run(record_payment, undo=void_payment, transactional=True)
    paid = (
        awaiting_3ds.to(authorized)
        .on("payment_succeeded", payload=PaymentConfirmed)
        .run(record_payment, undo=void_payment, transactional=True)
    )
    order = authorized.to(ordered).run(create_order, undo=cancel_order, transactional=True)
    complete = ordered.to(completed).run(complete_cart, undo=reopen_cart, transactional=True)

    @staticmethod
    def output(saga_input: CompleteCartInput, data: CheckoutData) -> CheckoutReceipt:
        """The receipt of a completed checkout."""
        return CompleteCart.output(saga_input, data)
