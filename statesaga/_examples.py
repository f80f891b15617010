"""A small saga for the library's own doctests, so the library never imports its example.

``Fulfil`` validates an order, reserves stock, authorizes a payment and
ships (the pivot); reserving and authorizing have compensations. An order
paid with ``card="declined"`` fails at ``authorize`` and is compensated.

>>> from statesaga import Engine, Status
>>> with Engine("sqlite://") as engine:
...     ok = engine.start(Fulfil, Order("o-1"))
...     declined = engine.start(Fulfil, Order("o-2", card="declined"))
>>> ok.status, declined.status
(<Status.COMPLETED: 'completed'>, <Status.COMPENSATED: 'compensated'>)
"""

from __future__ import annotations

import attrs

from statesaga.context import StepContext
from statesaga.dsl import Saga, State
from statesaga.errors import NonRetryableError

__all__ = ["Fulfil", "Order", "PaymentDeclined", "Progress"]


@attrs.frozen
class Order:
    """What to fulfil."""

    order_id: str
    card: str = "ok"


@attrs.frozen
class Progress:
    """What the steps did."""

    reserved: bool = False
    authorized: bool = False
    shipped: bool = False


class PaymentDeclined(NonRetryableError):
    """The card was declined."""


def validate_order(ctx: StepContext[Order, Progress]) -> None:
    """Nothing to check in the example."""


def reserve_stock(ctx: StepContext[Order, Progress]) -> Progress:
    """Hold the stock."""
    return attrs.evolve(ctx.data, reserved=True)


def release_stock(ctx: StepContext[Order, Progress]) -> Progress:
    """Give the stock back."""
    return attrs.evolve(ctx.data, reserved=False)


def authorize_payment(ctx: StepContext[Order, Progress]) -> Progress:
    """Hold the money, unless the card is declined."""
    if ctx.input.card == "declined":
        raise PaymentDeclined(f"the card of {ctx.input.order_id} was declined")
    return attrs.evolve(ctx.data, authorized=True)


def cancel_payment(ctx: StepContext[Order, Progress]) -> Progress:
    """Let the money go."""
    return attrs.evolve(ctx.data, authorized=False)


def ship_order(ctx: StepContext[Order, Progress]) -> Progress:
    """Hand the parcel over: no way back."""
    return attrs.evolve(ctx.data, shipped=True)


class Fulfil(Saga[Order, Progress]):
    """Validate, reserve, authorize, ship."""

    name = "fulfil"
    deadline = 60

    new = State(initial=True)
    validated = State()
    reserved = State()
    authorized = State()
    shipped = State(final=True)

    validate = new.to(validated).run(validate_order, read_only=True)
    reserve = validated.to(reserved).run(reserve_stock, undo=release_stock)
    authorize = reserved.to(authorized).run(authorize_payment, undo=cancel_payment)
    ship = authorized.to(shipped).run(ship_order, pivot=True)
