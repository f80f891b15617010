"""The testing kit applied to the real checkout: the shop's promises under injected faults.

Hypothesis attacks ``CompleteCart`` (its real steps, over the shop's tables in the
plan's database, with a simulated payment provider) with fault plans: failing and
timing-out steps and compensations, crashes before and after commits, lost leases,
duplicate starts, webhooks that arrive early, late, twice or never, and deadlines.
At every terminal state the shop must hold:

- stock is conserved and never negative: ``0 <= reserved <= stocked``, and
  ``reserved`` is exactly what the held reservations add up to;
- no payment is left authorized (or pending at the provider) without an order;
- the order and the cart agree: a completed cart points at its live order, an
  open cart has none, and a compensated checkout left neither;
- at most one live order per cart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from definitions.checkout import (
    CheckoutData,
    CompleteCart,
    CompleteCartInput,
    PaymentConfirmed,
    SimulatedProvider,
    cart_key,
)
from definitions.checkout.models import (
    Cart,
    CartLine,
    InventoryItem,
    Order,
    Payment,
    Reservation,
    create_tables,
)
from definitions.checkout.saga import reserve_inventory, shop_session
from statesaga import Run, StepContext
from statesaga.testing import (
    FaultPlan,
    InvariantViolation,
    Outcome,
    assert_compensates,
    run_plan,
)

STOCK = 3


@attrs.define
class ShopWorld:
    """The shop as one plan sees it: its database and its payment provider."""

    database: sa.Engine
    provider: SimulatedProvider


def fresh_shop(database_url: str) -> ShopWorld:
    """The shop's tables in the plan's database: 3 mugs, and two carts of 2 mugs each."""
    database = sa.create_engine(database_url)
    create_tables(database)
    with Session(database) as session, session.begin():
        session.add(
            InventoryItem(
                sku="mug", name="Mug", unit_price=1250, currency="EUR", stocked=STOCK, reserved=0
            )
        )
        for cart_id, method in (("cart-ok", "card_ok"), ("cart-3ds", "card_3ds")):
            cart = Cart(id=cart_id, currency="EUR", payment_method=method)
            cart.lines.append(CartLine(sku="mug", quantity=2, unit_price=1250, currency="EUR"))
            session.add(cart)
    return ShopWorld(database, SimulatedProvider(slow_seconds=0.0))


def confirmation(run: Run) -> PaymentConfirmed:
    """The provider's webhook for the payment the waiting run authorized."""
    return PaymentConfirmed(run.data.provider_ref or "pi_unknown")


def shop_invariant(outcome: Outcome) -> None:
    """The shop's promises, at every terminal state of the checkout."""
    world: ShopWorld = outcome.world
    try:
        with Session(world.database) as session:
            _check(outcome, session, world.provider)
    finally:
        world.database.dispose()


def _check(outcome: Outcome, session: Session, provider: SimulatedProvider) -> None:
    item = session.get_one(InventoryItem, "mug")
    held = session.scalars(sa.select(Reservation).where(Reservation.status == "held")).all()
    assert 0 <= item.reserved <= item.stocked == STOCK, f"stock {item.reserved}/{item.stocked}"
    assert item.reserved == sum(r.quantity for r in held), (
        f"{item.reserved} reserved, but the held reservations add up to "
        f"{sum(r.quantity for r in held)}"
    )
    live = session.scalars(sa.select(Order).where(Order.canceled_at.is_(None))).all()
    carts = [order.cart_id for order in live]
    assert len(carts) == len(set(carts)), f"more than one live order for a cart: {carts}"
    live_refs = set()
    for order in live:
        payment = session.get_one(Payment, order.payment_id)
        assert payment.status == "authorized", f"order {order.id} has a {payment.status} payment"
        live_refs.add(payment.provider_ref)
        reserved = sum(r.quantity for r in held if r.checkout_id == order.checkout_id)
        assert reserved == 2, f"order {order.id} holds {reserved} mugs, not 2"
    booked = session.scalars(sa.select(Payment).where(Payment.status == "authorized")).all()
    unordered = [p.id for p in booked if p.provider_ref not in live_refs]
    assert not unordered, f"payments booked authorized without an order: {unordered}"
    pending = [
        a.provider_ref
        for a in provider.payments()
        if a.status in ("authorized", "requires_action") and a.provider_ref not in live_refs
    ]
    assert not pending, f"payments held at the provider without an order: {pending}"
    for cart in session.scalars(sa.select(Cart)):
        orders = [order for order in live if order.cart_id == cart.id]
        if cart.status == "completed":
            assert [o.id for o in orders] == [cart.order_id], f"{cart.id} completed: {orders}"
        else:
            assert not orders, f"{cart.id} is open but has order {orders[0].id}"
    for run in outcome.runs:
        cart = session.get_one(Cart, run.input.cart_id)
        if run.status.value == "completed":
            assert cart.status == "completed", f"run {run.id[:8]} completed, cart is open"
            assert cart.order_id == run.output.order_id
        elif run.status.value == "compensated":
            leftovers = [r.id for r in held if r.checkout_id == run.id]
            assert not leftovers, f"compensated run {run.id[:8]} still holds {leftovers}"
            assert cart.order_id is None or cart.order_id != f"ord-{run.id}"


KIT: dict[str, Any] = {
    "setup": fresh_shop,
    "resources": lambda world: [world.provider],
    "key": lambda saga_input: cart_key(saga_input.cart_id),
    "payloads": {"payment_succeeded": confirmation},
}


@pytest.mark.parametrize("cart_id", ["cart-ok", "cart-3ds"])
def test_a_checkout_without_faults_completes_and_keeps_every_promise(
    cart_id: str, tmp_path: Path
) -> None:
    outcome = run_plan(
        CompleteCart,
        FaultPlan(),
        input=CompleteCartInput(cart_id),
        database=f"sqlite:///{tmp_path / 'shop.db'}",
        **KIT,
    )

    assert outcome.run.status.value == "completed", outcome.scenario()
    shop_invariant(outcome)


@pytest.mark.slow
def test_the_checkout_keeps_the_shops_promises_under_every_fault_plan() -> None:
    assert_compensates(
        CompleteCart,
        input=st.sampled_from([CompleteCartInput("cart-ok"), CompleteCartInput("cart-3ds")]),
        invariant=shop_invariant,
        **KIT,
    )


# -- the invariant is not a formality: a checkout whose compensation leaks stock fails it --


def release_nothing(ctx: StepContext[CompleteCartInput, CheckoutData]) -> None:
    """A planted bug: marks the reservations released but gives no stock back."""
    with shop_session(ctx) as session:
        for reservation in session.scalars(
            sa.select(Reservation).where(Reservation.checkout_id == ctx.instance_id)
        ):
            reservation.status = "released"


class LeakyCheckout(CompleteCart):
    """The real checkout, but releasing a reservation forgets the inventory."""

    name = "leaky-checkout"
    reserve = CompleteCart.validated.to(CompleteCart.reserved).run(
        reserve_inventory, undo=release_nothing, transactional=True
    )


def test_the_kit_finds_a_compensation_that_leaks_stock_with_a_small_plan() -> None:
    with pytest.raises(InvariantViolation) as found:
        assert_compensates(
            LeakyCheckout, input=CompleteCartInput("cart-ok"), invariant=shop_invariant, **KIT
        )

    violation = found.value
    assert "reserved, but the held reservations add up to" in str(violation)
    assert violation.outcome.run.status.value == "compensated"
    assert len(violation.outcome.plan.faults) == 1  # shrunk to one fault that compensates
    print(f"found after {violation.examples_to_find} plans:\n{violation}")
