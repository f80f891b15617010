"""A small shop for the testing kit's tests: a checkout saga and five planted bugs.

The shop's domain is a module-level ``shop`` that ``fresh_shop`` resets before
each plan. ``Checkout`` is correct; each ``Buggy*`` copy plants one bug the
kit must find.
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga import NonRetryableError, Retry, Saga, State, StepContext
from statesaga.testing import Outcome

FAST = Retry(attempts=3, initial_interval=1, backoff=2, jitter=0)
# every undoable step may have landed even when its try failed (or its holder paused past
# its lease and another engine gave up on it): its compensation runs then too
UNDOABLE: dict[str, Any] = {"undo_on_failure": True, "retry": FAST, "undo_retry": FAST}


class Refused(NonRetryableError):
    """The shop refuses a late try of a step whose effect was already undone."""


@attrs.define
class Cart:
    cart_id: str = "cart-1"
    quantity: int = 1


@attrs.define
class Progress:
    steps: list[str] = attrs.Factory(list)


@attrs.define
class Shop:
    """What the world looks like: stock, reservations, money, and broken rules."""

    stock: dict[str, int] = attrs.Factory(lambda: {"widget": 10, "gift-wrap": 10})
    reserved: dict[tuple[str, str], int] = attrs.Factory(dict)
    charges: list[tuple[str, int]] = attrs.Factory(list)
    captured: set[str] = attrs.Factory(set)
    shipped: list[str] = attrs.Factory(list)
    applied: set[str] = attrs.Factory(set)
    effects: dict[str, list[str]] = attrs.Factory(dict)
    broken: list[str] = attrs.Factory(list)
    checked_out: set[str] = attrs.Factory(set)
    undone: set[tuple[str, str]] = attrs.Factory(set)
    """(instance, effect) pairs already compensated: a late try of the step (from a
    holder that paused past its lease) is refused, as a payment provider refuses a
    charge whose authorization was voided."""

    def once(self, ctx: StepContext[Any, Any], effect: str) -> bool:
        """First time this idempotency key is seen (a provider's deduplication)."""
        if (ctx.instance_id, effect) in self.undone:
            raise Refused(f"{effect} of {ctx.instance_id[:8]} was already undone")
        if ctx.idempotency_key in self.applied:
            return False
        self.applied.add(ctx.idempotency_key)
        return True

    def did(self, ctx: StepContext[Any, Any], effect: str) -> None:
        self.effects.setdefault(ctx.instance_id, []).append(effect)

    def undid(self, ctx: StepContext[Any, Any], effect: str) -> None:
        self.undone.add((ctx.instance_id, effect))
        done = self.effects.get(ctx.instance_id, [])
        if effect not in done:
            return  # never happened (or already undone): nothing to do
        if done[-1] != effect:
            self.broken.append(f"undid {effect} while {done[-1]} was still in place")
        done.remove(effect)


shop = Shop()


def fresh_shop() -> Shop:
    global shop
    shop = Shop()
    return shop


# -- steps ------------------------------------------------------------------------------------


def _reserve(ctx: StepContext[Cart, Progress], sku: str) -> Progress:
    if shop.once(ctx, f"reserve {sku}"):
        shop.stock[sku] -= ctx.input.quantity
        key = (ctx.instance_id, sku)
        shop.reserved[key] = shop.reserved.get(key, 0) + ctx.input.quantity
        shop.did(ctx, f"reserve {sku}")
    return Progress([*ctx.data.steps, f"reserve {sku}"])


def _release(ctx: StepContext[Cart, Progress], sku: str) -> None:
    quantity = shop.reserved.pop((ctx.instance_id, sku), 0)
    shop.stock[sku] += quantity
    shop.undid(ctx, f"reserve {sku}")


def reserve_widget(ctx: StepContext[Cart, Progress]) -> Progress:
    if ctx.input.cart_id in shop.checked_out:
        raise Refused(f"cart {ctx.input.cart_id} is already checked out")
    return _reserve(ctx, "widget")


def release_widget(ctx: StepContext[Cart, Progress]) -> None:
    _release(ctx, "widget")


def reserve_gift_wrap(ctx: StepContext[Cart, Progress]) -> Progress:
    return _reserve(ctx, "gift-wrap")


def release_gift_wrap(ctx: StepContext[Cart, Progress]) -> None:
    _release(ctx, "gift-wrap")


def forget_gift_wrap(ctx: StepContext[Cart, Progress]) -> None:
    """Planted bug: the gift wrap stays reserved."""


def charge(ctx: StepContext[Cart, Progress]) -> Progress:
    if shop.once(ctx, "charge"):  # the payment provider deduplicates by idempotency key
        shop.charges.append((ctx.instance_id, 25))
        shop.did(ctx, "charge")
    return Progress([*ctx.data.steps, "charge"])


def charge_without_key(ctx: StepContext[Cart, Progress]) -> Progress:
    """Planted bug: charges again whenever it runs again."""
    if (ctx.instance_id, "charge") in shop.undone:
        raise Refused("charge already undone")
    shop.charges.append((ctx.instance_id, 25))
    shop.did(ctx, "charge")
    return Progress([*ctx.data.steps, "charge"])


def refund(ctx: StepContext[Cart, Progress]) -> None:
    if ctx.instance_id in shop.captured:
        shop.broken.append(f"refunded {ctx.instance_id[:8]} after its payment was captured")
    shop.charges = [(who, amount) for who, amount in shop.charges if who != ctx.instance_id]
    shop.undid(ctx, "charge")


def capture(ctx: StepContext[Cart, Progress]) -> Progress:
    shop.captured.add(ctx.instance_id)
    return Progress([*ctx.data.steps, "capture"])


def void_capture(ctx: StepContext[Cart, Progress]) -> None:
    shop.broken.append(f"voided the captured payment of {ctx.instance_id[:8]}")
    shop.captured.discard(ctx.instance_id)


def ship(ctx: StepContext[Cart, Progress]) -> Progress:
    if ctx.instance_id not in shop.shipped:
        shop.shipped.append(ctx.instance_id)
        shop.checked_out.add(ctx.input.cart_id)
    return Progress([*ctx.data.steps, "ship"])


# -- the sagas -----------------------------------------------------------------------------------


class Checkout(Saga[Cart, Progress]):
    """reserve the widget, reserve gift wrap, charge, capture (the pivot), ship."""

    name = "kit-checkout"
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=release_widget, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=release_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge, undo=refund, **UNDOABLE)
    settle = charged.to(captured).run(capture, pivot=True, retry=FAST)
    send = captured.to(shipped).run(ship, retry=FAST)


class ForgetsAReservation(Saga[Cart, Progress]):
    """Planted bug 1: the gift wrap's compensation forgets its reservation."""

    name = "kit-forgets-a-reservation"
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=release_widget, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=forget_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge, undo=refund, **UNDOABLE)
    settle = charged.to(captured).run(capture, pivot=True, retry=FAST)
    send = captured.to(shipped).run(ship, retry=FAST)


class UndoesInForwardOrder(Saga[Cart, Progress]):
    """Planted bug 2: the compensations are wired back to front, so undoing the
    stack in reverse undoes the effects in forward order."""

    name = "kit-undoes-in-forward-order"
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=refund, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=release_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge, undo=release_widget, **UNDOABLE)
    settle = charged.to(captured).run(capture, pivot=True, retry=FAST)
    send = captured.to(shipped).run(ship, retry=FAST)


class ChargesTwice(Saga[Cart, Progress]):
    """Planted bug 3: the charge ignores its idempotency key, so a crash after it
    (and the retry recovery makes) charges the customer again."""

    name = "kit-charges-twice"
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=release_widget, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=release_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge_without_key, undo=refund, **UNDOABLE)
    settle = charged.to(captured).run(capture, pivot=True, retry=FAST)
    send = captured.to(shipped).run(ship, retry=FAST)


class CompensatesThePivot(Saga[Cart, Progress]):
    """Planted bug 4: the capture is declared compensatable and the pivot put on
    shipping, so a failed shipment voids a captured payment."""

    name = "kit-compensates-the-pivot"
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=release_widget, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=release_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge, undo=refund, **UNDOABLE)
    settle = charged.to(captured).run(capture, undo=void_capture, **UNDOABLE)
    send = captured.to(shipped).run(ship, pivot=True, retry=FAST)


def cart_key(cart: Cart) -> str:
    """The entity lock of a checkout: one open checkout per cart."""
    return f"cart:complete:{cart.cart_id}"


def no_key(cart: Cart) -> None:
    """Planted bug 5: the checkout takes no entity lock."""


def shop_invariant(outcome: Outcome) -> None:
    """The shop's promises, at every terminal state."""
    world: Shop = outcome.world
    assert not world.broken, world.broken
    for sku, left in world.stock.items():
        held = sum(n for (_, s), n in world.reserved.items() if s == sku)
        assert left + held == 10, f"{sku}: {left} in stock + {held} reserved != 10"
    completed = [run for run in outcome.runs if run.status.value == "completed"]
    carts = [run.input.cart_id for run in completed]
    assert len(carts) == len(set(carts)), f"cart checked out {len(carts)} times"
    for run in outcome.runs:
        paid = sum(amount for who, amount in world.charges if who == run.id)
        held = {sku for (who, sku) in world.reserved if who == run.id}
        if run.status.value == "completed":
            assert paid == 25, f"completed run {run.id[:8]} was charged {paid}"
            assert held == {"widget", "gift-wrap"}, f"completed run {run.id[:8]} holds {held}"
        else:
            assert paid == 0, f"compensated run {run.id[:8]} still charged {paid}"
            assert not held, f"compensated run {run.id[:8]} still holds {sorted(held)}"


class ConfirmedCheckout(Saga[Cart, Progress]):
    """reserve, charge, wait for the customer's confirmation (a 3-D Secure webhook),
    capture (the pivot), ship: the shape in which contention loses payments."""

    name = "kit-confirmed-checkout"
    deadline = 120
    new = State(initial=True)
    widget = State()
    wrapped = State()
    charged = State()
    confirming = State(timeout=60)
    confirmed = State()
    captured = State()
    shipped = State(final=True)

    reserve = new.to(widget).run(reserve_widget, undo=release_widget, **UNDOABLE)
    wrap = widget.to(wrapped).run(reserve_gift_wrap, undo=release_gift_wrap, **UNDOABLE)
    pay = wrapped.to(charged).run(charge, undo=refund, **UNDOABLE)
    ask = charged.to(confirming)
    confirm = confirming.to(confirmed).on("paid")
    settle = confirmed.to(captured).run(capture, pivot=True, retry=FAST)
    send = captured.to(shipped).run(ship, retry=FAST)
