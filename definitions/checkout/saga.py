"""The complete-cart saga: validate, reserve, authorize, order, complete.

On any failure the saga releases the reservations, cancels the payment,
cancels the order and reopens the cart, in that (reverse) order. A payment
that needs customer action waits for the provider's webhook
(``payment_succeeded``) for up to 45 seconds, then compensates; the whole
checkout has a 60-second deadline.

The steps here keep their effects in the saga's context, with the payment
outcome chosen by the cart's ``payment_method`` (``"card"`` approves,
``"declined-card"`` declines, ``"3ds-card"`` requires action). The shop's real
steps, over its own database tables, live beside them in the checkout
package as the domain grows.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from statesaga import NonRetryableError, Retry, Saga, State, StepContext

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


@attrs.frozen
class CartLine:
    """One line of the cart: a SKU, how many, and the unit price in cents."""

    sku: str
    quantity: int
    unit_price: int


@attrs.frozen
class CompleteCartInput:
    """What the shop passes when a customer completes a cart."""

    cart_id: str
    lines: tuple[CartLine, ...]
    currency: str = "EUR"
    payment_method: str = "card"


@attrs.frozen
class CheckoutData:
    """What the steps record as the saga goes, and what compensations read."""

    total: int = 0
    reservations: tuple[str, ...] = ()
    payment_id: str | None = None
    payment_status: str | None = None
    order_id: str | None = None
    cart_completed: bool = False


@attrs.frozen
class PaymentConfirmed:
    """The payment provider's webhook: the customer completed the payment."""

    payment_id: str


@attrs.frozen
class CheckoutReceipt:
    """What a completed checkout returns."""

    cart_id: str
    order_id: str
    total: int
    currency: str


class InvalidCart(NonRetryableError):
    """The cart cannot be checked out as it is (empty, bad quantities or prices)."""


class PaymentDeclined(NonRetryableError):
    """The payment provider declined the payment."""


Ctx = StepContext[CompleteCartInput, CheckoutData]


def validate_cart(ctx: Ctx) -> CheckoutData:
    """Check the cart has lines with positive quantities and prices; compute the total."""
    lines = ctx.input.lines
    if not lines:
        raise InvalidCart(f"cart {ctx.input.cart_id} is empty")
    for line in lines:
        if line.quantity <= 0 or line.unit_price < 0:
            raise InvalidCart(f"cart {ctx.input.cart_id} has an invalid line for {line.sku}")
    total = sum(line.quantity * line.unit_price for line in lines)
    return attrs.evolve(ctx.data, total=total)


def reserve_inventory(ctx: Ctx) -> CheckoutData:
    """Reserve every line's stock (one reservation per line)."""
    reservations = tuple(f"rsv-{ctx.input.cart_id}-{line.sku}" for line in ctx.input.lines)
    return attrs.evolve(ctx.data, reservations=reservations)


def release_inventory(ctx: Ctx) -> CheckoutData:
    """Release what ``reserve_inventory`` reserved."""
    return attrs.evolve(ctx.data, reservations=())


def authorize_payment(ctx: Ctx) -> CheckoutData:
    """Ask the payment provider to authorize the total (keyed by the step's idempotency key)."""
    method = ctx.input.payment_method
    if method == "declined-card":
        raise PaymentDeclined(f"payment for cart {ctx.input.cart_id} was declined")
    status = "requires_action" if method == "3ds-card" else "authorized"
    payment_id = f"pay-{ctx.idempotency_key}"
    return attrs.evolve(ctx.data, payment_id=payment_id, payment_status=status)


def cancel_payment(ctx: Ctx) -> CheckoutData:
    """Void the authorization (tolerates a payment that was never made)."""
    return attrs.evolve(ctx.data, payment_status="canceled")


def payment_requires_action(ctx: Ctx) -> bool:
    """The provider asked the customer to confirm (3-D Secure)."""
    return ctx.data.payment_status == "requires_action"


def confirm_payment(ctx: Ctx) -> CheckoutData:
    """Record the webhook's confirmation."""
    return attrs.evolve(ctx.data, payment_status="authorized")


def create_order(ctx: Ctx) -> CheckoutData:
    """Create the order for the reserved lines and the authorized payment."""
    return attrs.evolve(ctx.data, order_id=f"ord-{ctx.input.cart_id}")


def cancel_order(ctx: Ctx) -> CheckoutData:
    """Cancel the order (it stays, marked canceled)."""
    return ctx.data


def complete_cart(ctx: Ctx) -> CheckoutData:
    """Mark the cart completed."""
    return attrs.evolve(ctx.data, cart_completed=True)


def reopen_cart(ctx: Ctx) -> CheckoutData:
    """Un-complete the cart so the customer can try again."""
    return attrs.evolve(ctx.data, cart_completed=False)


class CompleteCart(Saga[CompleteCartInput, CheckoutData]):
    """Checkout: turn a cart into an order, or leave everything as it was."""

    name = "complete-cart"
    version = 1
    deadline = timedelta(seconds=60)

    new = State(initial=True)
    validated = State()
    reserved = State()
    authorizing = State()
    awaiting_payment = State(timeout=timedelta(seconds=45))
    authorized = State()
    ordered = State()
    completed = State(final=True)

    validate = new.to(validated).run(validate_cart, read_only=True)
    reserve = validated.to(reserved).run(reserve_inventory, undo=release_inventory)
    authorize = reserved.to(authorizing).run(
        authorize_payment,
        undo=cancel_payment,
        undo_on_failure=True,
        retry=Retry(attempts=3, initial_interval=0.2),
        timeout=timedelta(seconds=10),
    )
    needs_action = authorizing.to(awaiting_payment).when(payment_requires_action)
    approved = authorizing.to(authorized)
    paid = (
        awaiting_payment.to(authorized)
        .on("payment_succeeded", payload=PaymentConfirmed)
        .run(confirm_payment, read_only=True)
    )
    order = authorized.to(ordered).run(create_order, undo=cancel_order)
    complete = ordered.to(completed).run(complete_cart, undo=reopen_cart)

    @staticmethod
    def output(saga_input: CompleteCartInput, data: CheckoutData) -> CheckoutReceipt:
        """The receipt of a completed checkout."""
        assert data.order_id is not None
        return CheckoutReceipt(saga_input.cart_id, data.order_id, data.total, saga_input.currency)
