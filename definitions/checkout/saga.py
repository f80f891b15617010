"""The complete-cart saga: validate, reserve, authorize, record, order, complete.

Every database step runs in the transaction of the transition that runs it
(``transactional=True``): its writes and the saga's new state commit together,
exactly once, or not at all. On any failure the saga releases the
reservations, cancels the payment (at the provider and in the shop's books),
cancels the order and reopens the cart, in reverse order. A payment that
needs customer action (3-D Secure) waits for the provider's webhook
(``payment_succeeded``) for up to 45 seconds, then compensates; the whole
checkout has a 60-second deadline.

The payment provider comes from the engine: ``Engine(..., resources=[provider])``
(see :mod:`definitions.checkout.provider`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import attrs
import sqlalchemy as sa
from sqlalchemy.orm import Session

from definitions.checkout.errors import (
    CartAlreadyCompleted,
    CartNotFound,
    InsufficientStock,
    InvalidCart,
    PaymentDeclined,
)
from definitions.checkout.models import (
    Cart,
    InventoryItem,
    Order,
    Payment,
    Reservation,
    utcnow,
)
from definitions.checkout.provider import PaymentProvider, PaymentRequest
from statesaga import Retry, Saga, State, StepContext

__all__ = [
    "CheckoutData",
    "CheckoutReceipt",
    "CompleteCart",
    "CompleteCartInput",
    "LineSnapshot",
    "PaymentConfirmed",
    "authorization_key",
]


@attrs.frozen
class CompleteCartInput:
    """What the shop passes when a customer completes a cart."""

    cart_id: str


@attrs.frozen
class LineSnapshot:
    """A cart line as validated: what is reserved, ordered and paid for."""

    sku: str
    quantity: int
    unit_price: int


@attrs.frozen
class CheckoutData:
    """What the steps record as the saga goes, and what compensations read."""

    lines: tuple[LineSnapshot, ...] = ()
    total: int = 0
    currency: str = ""
    payment_method: str = ""
    provider_ref: str | None = None
    payment_status: str | None = None
    payment_id: str | None = None
    order_id: str | None = None


@attrs.frozen
class PaymentConfirmed:
    """The payment provider's webhook: the customer completed the required action."""

    provider_ref: str


@attrs.frozen
class CheckoutReceipt:
    """What a completed checkout returns."""

    cart_id: str
    order_id: str
    total: int
    currency: str


Ctx = StepContext[CompleteCartInput, CheckoutData]


@contextmanager
def shop_session(ctx: Ctx) -> Iterator[Session]:
    """An ORM session on the transition's own connection: flushed, never committed here.

    The transition commits it, together with the saga's new state.
    """
    session = Session(bind=ctx.connection, autoflush=False, expire_on_commit=False)
    try:
        yield session
        session.flush()
    finally:
        session.close()


def authorization_key(checkout_id: str) -> str:
    """The idempotency key of a checkout's payment: the same on every try and after a crash."""
    return f"checkout:{checkout_id}:authorize"


# -- the forward steps ------------------------------------------------------------------------


def validate_cart(ctx: Ctx) -> CheckoutData:
    """Check the cart: it exists, is open, has lines, and its prices and currency are current."""
    cart_id = ctx.input.cart_id
    with shop_session(ctx) as session:
        cart = session.get(Cart, cart_id)
        if cart is None:
            raise CartNotFound(f"cart {cart_id!r} does not exist", cart_id=cart_id)
        if cart.status == "completed":
            raise CartAlreadyCompleted(
                f"cart {cart_id!r} is already completed (order {cart.order_id})", cart_id=cart_id
            )
        if not cart.lines:
            raise InvalidCart(
                f"cart {cart_id!r} is empty: add a product before checking out", cart_id=cart_id
            )
        skus = [line.sku for line in cart.lines]
        items = {
            item.sku: item
            for item in session.scalars(sa.select(InventoryItem).where(InventoryItem.sku.in_(skus)))
        }
        lines = []
        for line in cart.lines:
            item = items[line.sku]
            if line.quantity <= 0:
                raise InvalidCart(
                    f"cart {cart_id!r} wants {line.quantity} of {line.sku}: "
                    "a quantity must be at least 1",
                    cart_id=cart_id,
                )
            if line.currency != cart.currency or item.currency != cart.currency:
                raise InvalidCart(
                    f"cart {cart_id!r} is in {cart.currency} but {line.sku} is priced in "
                    f"{item.currency}: one cart, one currency",
                    cart_id=cart_id,
                )
            if line.unit_price != item.unit_price:
                raise InvalidCart(
                    f"the price of {line.sku} changed from {line.unit_price} to "
                    f"{item.unit_price}: refresh the cart and confirm the new total",
                    cart_id=cart_id,
                )
            lines.append(LineSnapshot(line.sku, line.quantity, line.unit_price))
        total = sum(line.quantity * line.unit_price for line in lines)
        return attrs.evolve(
            ctx.data,
            lines=tuple(lines),
            total=total,
            currency=cart.currency,
            payment_method=cart.payment_method,
        )


def reserve_inventory(ctx: Ctx) -> None:
    """Reserve every line's units, or none of them.

    Each SKU is taken by one conditional UPDATE (the stock check and the write in
    one statement, so two checkouts cannot both take the last unit); SKUs go in
    a fixed order so that two carts sharing SKUs never deadlock. When one SKU
    falls short, :class:`InsufficientStock` rolls the whole transaction back:
    what this step reserved before it is gone with it.
    """
    cart_id = ctx.input.cart_id
    with shop_session(ctx) as session:
        for line in sorted(ctx.data.lines, key=lambda line: line.sku):
            taken = session.execute(
                sa.update(InventoryItem)
                .where(
                    InventoryItem.sku == line.sku,
                    InventoryItem.stocked - InventoryItem.reserved >= line.quantity,
                )
                .values(
                    reserved=InventoryItem.reserved + line.quantity,
                    version=InventoryItem.version + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                item = session.get_one(InventoryItem, line.sku)
                raise InsufficientStock(
                    f"only {item.available} of {line.sku} left, cart {cart_id!r} wants "
                    f"{line.quantity}: lower the quantity or remove the line",
                    sku=line.sku,
                    requested=line.quantity,
                    available=item.available,
                    cart_id=cart_id,
                )
            session.add(
                Reservation(
                    id=f"{ctx.instance_id}:{line.sku}",
                    checkout_id=ctx.instance_id,
                    cart_id=cart_id,
                    sku=line.sku,
                    quantity=line.quantity,
                )
            )


def release_inventory(ctx: Ctx) -> None:
    """Release what this checkout still holds (every ``held`` reservation of it)."""
    with shop_session(ctx) as session:
        held = session.scalars(
            sa.select(Reservation)
            .where(Reservation.checkout_id == ctx.instance_id, Reservation.status == "held")
            .order_by(Reservation.sku)
        ).all()
        for reservation in held:
            session.execute(
                sa.update(InventoryItem)
                .where(InventoryItem.sku == reservation.sku)
                .values(
                    reserved=InventoryItem.reserved - reservation.quantity,
                    version=InventoryItem.version + 1,
                )
                .execution_options(synchronize_session=False)
            )
            reservation.status = "released"
            reservation.released_at = utcnow()


def authorize_payment(ctx: Ctx) -> CheckoutData:
    """Ask the provider to authorize the total, under the checkout's idempotency key."""
    provider = ctx.resource(PaymentProvider)
    authorization = provider.authorize(
        PaymentRequest(
            amount=ctx.data.total,
            currency=ctx.data.currency,
            payment_method=ctx.data.payment_method,
            reference=ctx.input.cart_id,
            idempotency_key=authorization_key(ctx.instance_id),
        )
    )
    if authorization.status in ("canceled", "failed"):
        # the checkout was compensated meanwhile and its key voided (a late try)
        raise PaymentDeclined(
            f"the payment under this checkout's key is {authorization.status}: "
            "start a new checkout",
            cart_id=ctx.input.cart_id,
        )
    return attrs.evolve(
        ctx.data, provider_ref=authorization.provider_ref, payment_status=authorization.status
    )


def cancel_payment(ctx: Ctx) -> None:
    """Cancel the authorization at the provider (tolerates one that was never made)."""
    ctx.resource(PaymentProvider).cancel(authorization_key(ctx.instance_id))


def payment_requires_action(ctx: Ctx) -> bool:
    """The provider asked the customer to confirm the payment (3-D Secure)."""
    return ctx.data.payment_status == "requires_action"


def record_payment(ctx: Ctx) -> CheckoutData:
    """Book the authorized payment in the shop's ``payments`` table."""
    if ctx.event is not None and ctx.event.provider_ref != ctx.data.provider_ref:
        raise PaymentDeclined(
            f"the webhook confirmed payment {ctx.event.provider_ref}, but this checkout "
            f"waits for {ctx.data.provider_ref}",
            cart_id=ctx.input.cart_id,
        )
    assert ctx.data.provider_ref is not None
    payment_id = f"pay-{ctx.instance_id}"
    with shop_session(ctx) as session:
        session.add(
            Payment(
                id=payment_id,
                checkout_id=ctx.instance_id,
                cart_id=ctx.input.cart_id,
                provider_ref=ctx.data.provider_ref,
                amount=ctx.data.total,
                currency=ctx.data.currency,
                status="authorized",
            )
        )
    return attrs.evolve(ctx.data, payment_id=payment_id, payment_status="authorized")


def void_payment(ctx: Ctx) -> None:
    """Mark the booked payment canceled (the provider's cancel follows, in reverse order)."""
    with shop_session(ctx) as session:
        payment = session.get(Payment, f"pay-{ctx.instance_id}")
        if payment is not None and payment.status != "canceled":
            payment.status = "canceled"
            payment.canceled_at = utcnow()


def create_order(ctx: Ctx) -> CheckoutData:
    """Create the order for the reserved lines and the authorized payment."""
    assert ctx.data.payment_id is not None
    order_id = f"ord-{ctx.instance_id}"
    with shop_session(ctx) as session:
        session.add(
            Order(
                id=order_id,
                checkout_id=ctx.instance_id,
                cart_id=ctx.input.cart_id,
                payment_id=ctx.data.payment_id,
                total=ctx.data.total,
                currency=ctx.data.currency,
            )
        )
    return attrs.evolve(ctx.data, order_id=order_id)


def cancel_order(ctx: Ctx) -> None:
    """Cancel the order: it stays, with ``canceled_at`` set."""
    with shop_session(ctx) as session:
        order = session.get(Order, f"ord-{ctx.instance_id}")
        if order is not None and order.canceled_at is None:
            order.canceled_at = utcnow()


def complete_cart(ctx: Ctx) -> None:
    """Mark the cart completed, pointing at its order."""
    with shop_session(ctx) as session:
        cart = session.get_one(Cart, ctx.input.cart_id)
        cart.status = "completed"
        cart.completed_at = utcnow()
        cart.order_id = ctx.data.order_id


def reopen_cart(ctx: Ctx) -> None:
    """Un-complete the cart so the customer can try again."""
    with shop_session(ctx) as session:
        cart = session.get(Cart, ctx.input.cart_id)
        if cart is not None and cart.order_id == ctx.data.order_id:
            cart.status = "open"
            cart.completed_at = None
            cart.order_id = None


# -- the graph --------------------------------------------------------------------------------

PROVIDER_RETRY = Retry(attempts=3, initial_interval=0.2, max_interval=2.0)


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
    needs_action = authorizing.to(awaiting_payment).when(payment_requires_action)
    approved = authorizing.to(authorized).run(record_payment, undo=void_payment, transactional=True)
    paid = (
        awaiting_payment.to(authorized)
        .on("payment_succeeded", payload=PaymentConfirmed)
        .run(record_payment, undo=void_payment, transactional=True)
    )
    order = authorized.to(ordered).run(create_order, undo=cancel_order, transactional=True)
    complete = ordered.to(completed).run(complete_cart, undo=reopen_cart, transactional=True)

    @staticmethod
    def output(saga_input: CompleteCartInput, data: CheckoutData) -> CheckoutReceipt:
        """The receipt of a completed checkout."""
        assert data.order_id is not None
        return CheckoutReceipt(saga_input.cart_id, data.order_id, data.total, data.currency)
