"""Checkout, end to end: the shop's complete-cart saga on SQLite and PostgreSQL.

Every test opens a :class:`~definitions.checkout.Shop` on a fresh database
(the ``db`` fixture: a new SQLite file, or this session's PostgreSQL schema,
emptied), stocks two products, fills a cart and completes it. Then it looks at
everything a checkout can touch, at once (:func:`books`): the stock (units on
the shelf, units reserved), the reservations, the payments the shop booked,
the orders, the cart, and what the payment provider holds as authorized; and
at the checkout run: its status and its history (:func:`path`).

The promise under test: a checkout ends with exactly one order, one payment
and its units reserved, or with everything as it was before (reservations
released, payment canceled at the provider and in the books, order canceled,
cart open), whatever fails, wherever, and however many customers race for
the same cart or the last units of a SKU.

Failures are injected without touching the saga (see ``checkout_faults``): a
SQL statement of a step (or compensation) fails from inside its transaction;
the provider refuses, or does the work and loses the answer; the process
"dies" mid-step and another shop recovers or cancels the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from checkout_faults import (
    Crash,
    FailingStatements,
    FaultyProvider,
    InjectedFault,
    InjectedOutage,
)

from definitions.checkout import (
    CartNotFound,
    CheckoutError,
    CheckoutFailed,
    CheckoutInProgress,
    CheckoutResult,
    CheckoutTimedOut,
    InsufficientStock,
    InvalidCart,
    PaymentDeclined,
    ProviderUnavailable,
    Shop,
    SimulatedProvider,
    WebhookReceipt,
    cart_key,
)
from definitions.checkout.models import Base, create_tables
from definitions.checkout.provider import Authorization, PaymentRequest, ProviderCall
from definitions.checkout.saga import authorization_key
from statesaga import Run, Status
from statesaga.store.sql import SqlStore
from statesaga.testing import FakeClock

HERE = Path(__file__).resolve().parent
WORKER = HERE / "checkout_worker.py"
SHOP_TABLES = (
    "shop_orders",
    "shop_payments",
    "shop_reservations",
    "shop_cart_lines",
    "shop_carts",
    "shop_inventory",
)
LEASE_TTL = 30.0  # the engine's default, in fake seconds where a test fakes the clock

MUG, TEA = 1250, 800  # unit prices, in cents
STOCK = {"mug": (5, 0), "tea": (10, 0)}  # sku: (stocked, reserved) before any checkout


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def url(db: str) -> Iterator[str]:
    """The database of one test: the store's ``db`` with the shop's tables emptied too.

    On PostgreSQL the shop's tables live in this session's schema, beside the
    store's (``Shop.open`` creates them through the store's connection, whose
    ``search_path`` is that schema); ``db`` empties only the store's tables.
    """
    _empty_shop_tables(db)
    yield db
    _empty_shop_tables(db)


def _empty_shop_tables(url: str) -> None:
    if url.startswith("sqlite"):
        return
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            if sa.inspect(connection).has_table("shop_orders"):
                connection.exec_driver_sql(f"TRUNCATE {', '.join(SHOP_TABLES)} CASCADE")
    finally:
        engine.dispose()


@pytest.fixture
def provider() -> Iterator[FaultyProvider]:
    """The payment provider: simulated, and told to fail where a test says."""
    provider = FaultyProvider()
    yield provider
    provider.close()


@pytest.fixture
def clock() -> FakeClock:
    """The engine's clock, moved by the test (the engine's own sleeps still really sleep)."""
    return FakeClock()


def open_shop(url: str, provider: SimulatedProvider, **engine_options: Any) -> Shop:
    """A shop on ``url``, with the two products on the shelf if they are not there yet."""
    shop = Shop.open(url, provider=provider, **engine_options)
    with contextlib.suppress(sa.exc.IntegrityError):  # a second shop on the same database
        shop.add_product("mug", "Enamel mug", unit_price=MUG, stock=5)
        shop.add_product("tea", "Green tea, 100 g", unit_price=TEA, stock=10)
    return shop


@pytest.fixture
def shop(url: str, provider: FaultyProvider) -> Iterator[Shop]:
    with open_shop(url, provider) as shop:
        yield shop


@pytest.fixture
def faults(shop: Shop) -> Iterator[FailingStatements]:
    """Failing SQL statements on the shop's database (see ``checkout_faults``)."""
    faults = FailingStatements(shop.database)
    yield faults
    faults.close()


@attrs.frozen
class Books:
    """Everything a checkout of one cart can change, as plain values compared at once."""

    stock: dict[str, tuple[int, int]]
    """sku: (stocked, reserved), for every product."""
    reservations: list[tuple[str, int, str]] = attrs.field(factory=list)
    """(sku, quantity, ``held`` / ``released``) of the cart's reservations."""
    payments: list[tuple[int, str]] = attrs.field(factory=list)
    """(amount, ``authorized`` / ``canceled``) of the payments the shop booked for the cart."""
    orders: list[tuple[int, str]] = attrs.field(factory=list)
    """(total, ``live`` / ``canceled``) of the cart's orders."""
    cart: tuple[str, str | None] = ("open", None)
    """(status, order id) of the cart."""
    authorized: list[int] = attrs.field(factory=list)
    """the amounts the provider holds as authorized for the cart."""


def books(shop: Shop, provider: SimulatedProvider, cart_id: str) -> Books:
    """The books of ``cart_id``, checking on the way that every row is consistent."""
    stock = {sku: attrs.astuple(shop.stock(sku)) for sku in STOCK}
    reservations = shop.reservations(cart_id)
    payments = shop.payments(cart_id)
    orders = shop.orders(cart_id)
    cart = shop.cart(cart_id)
    for r in reservations:
        assert (r.status == "released") == (r.released_at is not None), r.id
    for p in payments:
        assert (p.status == "canceled") == (p.canceled_at is not None), p.id
        assert p.status == "canceled" or provider.status(p.provider_ref) == "authorized", p.id
    for o in orders:
        assert o.payment_id in {p.id for p in payments}, o.id
    assert (cart.status == "completed") == (cart.completed_at is not None) == bool(cart.order_id)
    held: dict[str, int] = dict.fromkeys(STOCK, 0)  # by every checkout, of every cart
    for r in shop.reservations():
        if r.status == "held":
            held[r.sku] = held.get(r.sku, 0) + r.quantity
    for sku, (stocked, reserved) in stock.items():
        assert 0 <= reserved <= stocked, sku
        assert reserved == held[sku], f"{sku}: {reserved} reserved, {held[sku]} held"
    return Books(
        stock=stock,
        reservations=[(r.sku, r.quantity, r.status) for r in reservations],
        payments=[(p.amount, p.status) for p in payments],
        orders=[(o.total, "canceled" if o.canceled_at else "live") for o in orders],
        cart=(cart.status, cart.order_id),
        authorized=[a.amount for a in provider.authorized() if a.reference == cart_id],
    )


HISTORY_WORDS = {
    "start": "start",
    "forward": "{t}",
    "event": "{t} <- {event}",
    "wait": "wait",
    "timeout": "timed out",
    "retry": "{t} failed, retry",
    "failure": "{t} failed",
    "deadline": "deadline",
    "cancel": "cancel",
    "compensate": "undo {t}",
    "compensation_retry": "undo {t} failed, retry",
    "resume": "resume",
}


def path(run: Run) -> list[str]:
    """A run's history in words: ``validate``, ``authorize failed``, ``undo reserve``..."""
    return [HISTORY_WORDS[h.kind.value].format(t=h.transition, event=h.event) for h in run.history]


COMPLETED_PATH = ["start", "validate", "reserve", "authorize", "approved", "order", "complete"]
UNDO = ["undo order", "undo approved", "undo authorize", "undo reserve"]  # in this order


def cart_runs(shop: Shop, cart_id: str) -> list[Run]:
    """The cart's checkout runs, oldest first, with their histories."""
    runs = shop.engine.list(key=cart_key(cart_id), limit=100)
    return [shop.checkout(run.id) for run in reversed(runs)]


def the_run(shop: Shop, cart_id: str) -> Run:
    """The cart's one and only checkout run."""
    (run,) = cart_runs(shop, cart_id)
    return run


def recover_all(shop: Shop, clock: FakeClock, *, step: float = LEASE_TTL + 1) -> None:
    """Play the worker: move the clock and recover until the shop's runs are all settled."""
    for _ in range(20):
        if not any(run.status.is_open for run in shop.engine.list(limit=1000)):
            return
        clock.advance(step)
        shop.engine.recover()
    raise AssertionError("the runs did not settle")


# -- 1. the happy path ------------------------------------------------------------------------


def test_a_cart_completes_end_to_end(shop: Shop, provider: FaultyProvider) -> None:
    cart_id = shop.create_cart({"mug": 2, "tea": 1})

    result = shop.complete(cart_id, correlation_id="req-1")

    run = shop.checkout(result.checkout_id)
    order_id = f"ord-{run.id}"
    assert result == CheckoutResult(
        cart_id,
        "completed",
        order_id,
        total=2 * MUG + TEA,
        currency="EUR",
        checkout_id=run.id,
        provider_ref=run.data.provider_ref,
        run=result.run,
    )
    assert books(shop, provider, cart_id) == Books(
        stock={"mug": (5, 2), "tea": (10, 1)},
        reservations=[("mug", 2, "held"), ("tea", 1, "held")],
        payments=[(3300, "authorized")],
        orders=[(3300, "live")],
        cart=("completed", order_id),
        authorized=[3300],
    )
    (order,) = shop.orders(cart_id)
    (payment,) = shop.payments(cart_id)
    assert (order.checkout_id, order.payment_id) == (run.id, payment.id)
    assert (payment.checkout_id, payment.provider_ref) == (run.id, result.provider_ref)
    assert {r.checkout_id for r in shop.reservations(cart_id)} == {run.id}

    assert (run.status, run.state, run.error) == (Status.COMPLETED, "completed", None)
    assert (run.key, run.correlation_id) == (cart_key(cart_id), "req-1")
    assert (run.output.order_id, run.output.total) == (order_id, 3300)
    assert path(run) == COMPLETED_PATH
    # the provider was asked once, under the checkout's own idempotency key
    assert provider.calls == [
        ProviderCall("authorize", authorization_key(run.id), "card_ok", 3300, "authorized")
    ]


def test_completing_a_completed_cart_returns_its_order(
    shop: Shop, provider: FaultyProvider
) -> None:
    cart_id = shop.create_cart({"mug": 1})
    first = shop.complete(cart_id)
    before = books(shop, provider, cart_id)

    again = shop.complete(cart_id)

    assert again == CheckoutResult(
        cart_id,
        "completed",
        first.order_id,
        MUG,
        "EUR",
        first.checkout_id,
        already_completed=True,
        run=None,
    )
    assert books(shop, provider, cart_id) == before
    assert [run.id for run in cart_runs(shop, cart_id)] == [first.checkout_id]  # nothing ran
    assert len(provider.calls) == 1


def test_a_request_that_saw_the_cart_open_gets_the_order_made_meanwhile(
    shop: Shop, provider: FaultyProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the shop's own check cannot close: a request reads the cart while it is
    open, another request completes it, then the first starts its checkout. The saga's
    validation finds the cart completed; the shop answers with the order made meanwhile."""
    cart_id = shop.create_cart({"mug": 1})
    seen_open = shop.cart(cart_id)
    first = shop.complete(cart_id)
    before = books(shop, provider, cart_id)
    with monkeypatch.context() as patch:  # this request read the cart before
        patch.setattr(shop, "cart", lambda cart_id: seen_open)

        late = shop.complete(cart_id)

    assert (late.status, late.order_id, late.already_completed) == (
        "completed",
        first.order_id,
        True,
    )
    assert books(shop, provider, cart_id) == before
    assert len(provider.calls) == 1
    assert late.run is not None
    run = shop.checkout(late.run.id)
    assert (run.status, path(run)) == (Status.COMPENSATED, ["start", "validate failed"])
    assert run.error.type == "definitions.checkout.errors.CartAlreadyCompleted"


# -- 2. the payment fails: everything is rolled back ------------------------------------------


def test_a_declined_payment_rolls_everything_back(shop: Shop, provider: FaultyProvider) -> None:
    cart_id = shop.create_cart({"mug": 2, "tea": 1}, payment_method="card_declined")

    with pytest.raises(PaymentDeclined, match="declined") as declined:
        shop.complete(cart_id)

    assert declined.value.status == 402
    assert books(shop, provider, cart_id) == Books(
        stock=STOCK,
        reservations=[("mug", 2, "released"), ("tea", 1, "released")],
        # nothing booked, nothing ordered, the cart can be paid another way
    )
    run = the_run(shop, cart_id)
    assert declined.value.run.id == run.id
    assert (run.status, run.error.type, run.error.step) == (
        Status.COMPENSATED,
        "definitions.checkout.errors.PaymentDeclined",
        "authorize",
    )
    # the authorization is canceled by its key even though it failed: it may have landed
    assert path(run) == [
        "start",
        "validate",
        "reserve",
        "authorize failed",
        "undo authorize",
        "undo reserve",
    ]
    key = authorization_key(run.id)
    assert [(c.operation, c.idempotency_key, c.result) for c in provider.calls] == [
        ("authorize", key, "declined"),
        ("cancel", key, "none"),
    ]

    # the customer picks another card: the same cart completes
    with shop.database.begin() as connection:
        connection.execute(sa.text("UPDATE shop_carts SET payment_method = 'card_ok'"))
    assert shop.complete(cart_id).status == "completed"
    assert books(shop, provider, cart_id).cart[0] == "completed"


def test_3ds_confirmed_by_the_webhook_completes(shop: Shop, provider: FaultyProvider) -> None:
    cart_id = shop.create_cart({"mug": 1}, payment_method="card_3ds")

    pending = shop.complete(cart_id)

    assert (pending.status, pending.order_id, pending.total) == ("requires_action", None, MUG)
    assert books(shop, provider, cart_id) == Books(
        stock={"mug": (5, 1), "tea": (10, 0)}, reservations=[("mug", 1, "held")]
    )
    # while the customer confirms, the cart is taken
    with pytest.raises(CheckoutInProgress) as busy:
        shop.complete(cart_id)
    assert (busy.value.status, busy.value.run.id) == (409, pending.checkout_id)

    event = provider.finish_action(pending.provider_ref, succeeded=True)
    done = shop.payment_webhook(event)
    duplicate = shop.payment_webhook(event)  # providers deliver at least once

    assert done.status is Status.COMPLETED
    assert (duplicate.id, duplicate.status) == (done.id, Status.COMPLETED)
    order_id = f"ord-{done.id}"
    assert books(shop, provider, cart_id) == Books(
        stock={"mug": (5, 1), "tea": (10, 0)},
        reservations=[("mug", 1, "held")],
        payments=[(MUG, "authorized")],
        orders=[(MUG, "live")],
        cart=("completed", order_id),
        authorized=[MUG],
    )
    assert path(shop.checkout(done.id)) == [
        "start",
        "validate",
        "reserve",
        "authorize",
        "needs_action",
        "paid <- payment_succeeded",
        "order",
        "complete",
    ]


class EagerCustomer(FaultyProvider):
    """The customer confirms 3-D Secure so fast that the webhook beats the shop's record."""

    def __init__(self) -> None:
        super().__init__()
        self.shop: Shop | None = None
        self.early: list[WebhookReceipt] = []

    def authorize(self, request: PaymentRequest) -> Authorization:
        authorization = super().authorize(request)
        if authorization.status == "requires_action" and self.shop is not None:
            event = self.finish_action(authorization.provider_ref, succeeded=True)
            # delivered while the checkout is still in its authorize step
            self.early.append(self.shop.receive_webhook(event))
        return authorization


def test_a_webhook_that_comes_before_the_wait_is_kept_and_taken_when_the_checkout_waits(
    url: str,
) -> None:
    provider = EagerCustomer()
    with open_shop(url, provider) as shop:
        provider.shop = shop
        cart_id = shop.create_cart({"mug": 1}, payment_method="card_3ds")

        result = shop.complete(cart_id)

        # recorded in the inbox (the provider is told 200), not refused, not lost
        (early,) = provider.early
        assert (early.status, early.duplicate) == ("pending", False)
        assert early.run is not None
        assert early.run.id == result.checkout_id
        # the run took it as soon as it reached the wait
        assert result.status == "completed"
        run = shop.checkout(result.checkout_id)
        assert run.status is Status.COMPLETED
        assert len(shop.orders(cart_id)) == 1
        again = shop.receive_webhook(provider.finish_action(result.provider_ref))
        assert again.duplicate
        assert len(shop.orders(cart_id)) == 1


def test_3ds_failed_by_the_customer_rolls_everything_back(
    shop: Shop, provider: FaultyProvider
) -> None:
    cart_id = shop.create_cart({"mug": 2}, payment_method="card_3ds")
    pending = shop.complete(cart_id)
    assert provider.status(pending.provider_ref) == "requires_action"

    event = provider.finish_action(pending.provider_ref, succeeded=False)
    canceled = shop.payment_webhook(event)
    duplicate = shop.payment_webhook(event)

    assert canceled.status is Status.COMPENSATED
    assert (duplicate.id, duplicate.status) == (canceled.id, Status.COMPENSATED)
    assert books(shop, provider, cart_id) == Books(
        stock=STOCK, reservations=[("mug", 2, "released")]
    )
    assert provider.status(pending.provider_ref) == "canceled"
    run = shop.checkout(canceled.id)
    assert run.error.type == "Cancelled"
    assert path(run) == [
        "start",
        "validate",
        "reserve",
        "authorize",
        "needs_action",
        "cancel",
        "undo authorize",
        "undo reserve",
    ]
    # what the shop answers for it: the payment was declined (not a failed checkout)
    with pytest.raises(PaymentDeclined, match="the customer did not confirm it") as declined:
        shop.result(run)
    assert declined.value.status == 402
    # the cart is open again: the customer may try again
    assert shop.cart(cart_id).status == "open"


def test_3ds_confirmed_but_not_booked_rolls_everything_back(
    shop: Shop, provider: FaultyProvider, faults: FailingStatements
) -> None:
    cart_id = shop.create_cart({"mug": 2}, payment_method="card_3ds")
    pending = shop.complete(cart_id)
    event = provider.finish_action(pending.provider_ref, succeeded=True)

    with faults.fail("INSERT INTO shop_payments", InjectedFault("the books are closed")):
        run = shop.payment_webhook(event)

    assert run.status is Status.COMPENSATED
    assert books(shop, provider, cart_id) == Books(
        stock=STOCK, reservations=[("mug", 2, "released")]
    )
    assert provider.status(pending.provider_ref) == "canceled"
    assert path(shop.checkout(run.id)) == [
        "start",
        "validate",
        "reserve",
        "authorize",
        "needs_action",
        "paid failed",
        "undo authorize",
        "undo reserve",
    ]


def test_3ds_never_confirmed_times_out_and_rolls_everything_back(
    url: str, provider: FaultyProvider, clock: FakeClock
) -> None:
    with open_shop(url, provider, clock=clock) as shop:
        cart_id = shop.create_cart({"mug": 2}, payment_method="card_3ds")
        pending = shop.complete(cart_id)

        clock.advance(44)
        assert shop.engine.recover() == []  # the customer still has a second
        clock.advance(2)
        (timed_out,) = shop.engine.recover()

        assert timed_out.status is Status.COMPENSATED
        assert books(shop, provider, cart_id) == Books(
            stock=STOCK, reservations=[("mug", 2, "released")]
        )
        assert provider.status(pending.provider_ref) == "canceled"
        run = shop.checkout(timed_out.id)
        assert run.error.type == "WaitTimedOut"
        assert path(run) == [
            "start",
            "validate",
            "reserve",
            "authorize",
            "needs_action",
            "timed out",
            "undo authorize",
            "undo reserve",
        ]
        with pytest.raises(CheckoutTimedOut) as timed_out_error:
            shop.result(run)
        assert timed_out_error.value.status == 504

        # the customer confirms too late: the webhook is acknowledged, nothing changes
        late = shop.payment_webhook(provider.finish_action(pending.provider_ref))
        assert (late.id, late.status) == (run.id, Status.COMPENSATED)
        assert books(shop, provider, cart_id) == Books(
            stock=STOCK, reservations=[("mug", 2, "released")]
        )


# -- 3. a failure at every step ----------------------------------------------------------------


@attrs.frozen
class StepFailure:
    """A step that fails, how, and what is left of the checkout once it is compensated."""

    step: str
    statement: str | None  # the SQL statement that fails (None: the provider fails)
    path: list[str]
    payments: list[tuple[int, str]] = attrs.field(factory=list)
    orders: list[tuple[int, str]] = attrs.field(factory=list)
    reservations: list[tuple[str, int, str]] = attrs.field(
        factory=lambda: [("mug", 2, "released"), ("tea", 1, "released")]
    )
    provider_calls: list[tuple[str, str]] = attrs.field(
        factory=lambda: [("authorize", "authorized"), ("cancel", "canceled")]
    )
    partial: str | None = None
    """writes the step made before it failed, which its transaction's rollback took back"""


STEP_FAILURES = [
    StepFailure(
        "validate",
        "SELECT FROM shop_inventory",
        ["start", "validate failed"],
        reservations=[],
        provider_calls=[],
    ),
    # every stock UPDATE ran; the reservations' INSERT fails: the transaction takes them back
    StepFailure(
        "reserve",
        "INSERT INTO shop_reservations",
        ["start", "validate", "reserve failed"],
        reservations=[],
        provider_calls=[],
        partial="UPDATE shop_inventory",
    ),
    # the provider refuses outright: nothing was authorized, its cancel finds nothing
    StepFailure(
        "authorize",
        None,
        ["start", "validate", "reserve", "authorize failed", "undo authorize", "undo reserve"],
        provider_calls=[("cancel", "none")],
    ),
    StepFailure(
        "approved",
        "INSERT INTO shop_payments",
        ["start", "validate", "reserve", "authorize", "approved failed", *UNDO[-2:]],
    ),
    StepFailure(
        "order",
        "INSERT INTO shop_orders",
        [*COMPLETED_PATH[:5], "order failed", *UNDO[-3:]],
        payments=[(3300, "canceled")],
    ),
    StepFailure(
        "complete",
        "UPDATE shop_carts",
        [*COMPLETED_PATH[:6], "complete failed", *UNDO],
        payments=[(3300, "canceled")],
        orders=[(3300, "canceled")],
    ),
]


@pytest.mark.parametrize("failure", STEP_FAILURES, ids=lambda f: f.step)
def test_a_failure_at_any_step_leaves_everything_as_before(
    shop: Shop, provider: FaultyProvider, faults: FailingStatements, failure: StepFailure
) -> None:
    cart_id = shop.create_cart({"mug": 2, "tea": 1})
    error = InjectedFault(f"{failure.step} broke")
    if failure.statement is None:
        provider.fail_next("authorize", error)
        injected = contextlib.nullcontext()
    else:
        injected = faults.fail(failure.statement, error)

    with injected, pytest.raises(CheckoutFailed, match=f"{failure.step} broke") as failed:
        shop.complete(cart_id)

    assert failed.value.status == 500
    if failure.partial is not None:  # the mugs and the tea were taken, then given back
        assert faults.count(failure.partial) == 2
    assert books(shop, provider, cart_id) == Books(
        stock=STOCK,
        reservations=failure.reservations,
        payments=failure.payments,
        orders=failure.orders,
    )
    assert [(c.operation, c.result) for c in provider.calls] == failure.provider_calls
    run = the_run(shop, cart_id)
    assert (run.status, run.error.step) == (Status.COMPENSATED, failure.step)
    assert run.error.type == "checkout_faults.InjectedFault"
    assert path(run) == failure.path
    # nothing is left half-done: the customer can complete the same cart now
    assert shop.complete(cart_id).status == "completed"
    orders = books(shop, provider, cart_id).orders
    assert sorted(orders) == sorted([*failure.orders, (3300, "live")])


TRANSIENT_STEPS = [f for f in STEP_FAILURES if f.statement is not None]


@pytest.mark.parametrize("failure", TRANSIENT_STEPS, ids=lambda f: f.step)
def test_a_transient_failure_at_any_step_is_retried_and_done_once(
    url: str, provider: FaultyProvider, clock: FakeClock, failure: StepFailure
) -> None:
    # the retry is put off (not slept in place): the test plays the worker that recovers it
    with open_shop(url, provider, clock=clock, max_inline_sleep=0) as shop:
        faults = FailingStatements(shop.database)
        cart_id = shop.create_cart({"mug": 2, "tea": 1})
        try:
            with faults.fail(failure.statement, InjectedOutage("connection reset")):
                first = shop.complete(cart_id)
        finally:
            faults.close()
        assert (first.order_id, first.run.status) == (None, Status.RUNNING)  # a retry is due

        recover_all(shop, clock, step=5)

        run = the_run(shop, cart_id)
        assert run.status is Status.COMPLETED
        assert path(run) == _with_retry(COMPLETED_PATH, failure.step)
        assert books(shop, provider, cart_id) == Books(
            stock={"mug": (5, 2), "tea": (10, 1)},
            reservations=[("mug", 2, "held"), ("tea", 1, "held")],
            payments=[(3300, "authorized")],
            orders=[(3300, "live")],
            cart=("completed", f"ord-{run.id}"),
            authorized=[3300],
        )
        assert len(provider.calls) == 1


def _with_retry(steps: list[str], failed: str) -> list[str]:
    index = steps.index(failed)
    return [*steps[:index], f"{failed} failed, retry", *steps[index:]]


# -- 4. crashes: the process dies mid-step; another shop recovers or cancels the run ----------


STATE_BEFORE = {
    "validate": "new",
    "reserve": "validated",
    "authorize": "reserved",
    "approved": "authorizing",
    "order": "authorized",
    "complete": "ordered",
}


@pytest.mark.parametrize("then", ["recover", "cancel"])
@pytest.mark.parametrize("crash", STEP_FAILURES, ids=lambda f: f.step)
def test_a_crash_at_any_step_ends_completed_once_or_fully_rolled_back(
    url: str, provider: FaultyProvider, clock: FakeClock, crash: StepFailure, then: str
) -> None:
    dying = open_shop(url, provider, clock=clock)
    cart_id = dying.create_cart({"mug": 2, "tea": 1})
    faults = FailingStatements(dying.database)
    if crash.statement is None:  # the provider authorized; the process died before hearing it
        provider.fail_next("authorize", Crash("killed"), after=True)
        injected = contextlib.nullcontext()
    else:  # the step's transaction dies with the process: none of its writes remain
        injected = faults.fail(crash.statement, Crash("killed"))
    try:
        with injected, pytest.raises(Crash):
            dying.complete(cart_id)
    finally:
        faults.close()
        dying.close()
    clock.advance(LEASE_TTL + 1)  # its lease runs out

    with open_shop(url, provider, clock=clock) as shop:
        if crash.step == "validate":
            # the first step is transactional: the start commits with it or not at all, so
            # the crash left no run and nothing changed; the customer completes it again
            assert cart_runs(shop, cart_id) == []
            assert books(shop, provider, cart_id) == Books(stock=STOCK)
            assert shop.complete(cart_id).status == "completed"
            return
        (crashed,) = cart_runs(shop, cart_id)
        # the run stands where its last committed transition left it; the crashed attempt
        # left no trace (its transition never committed)
        assert (crashed.status, crashed.state) == (Status.RUNNING, STATE_BEFORE[crash.step])
        key = authorization_key(crashed.id)
        if then == "recover":
            (recovered,) = shop.engine.recover()

            assert recovered.status is Status.COMPLETED
            assert books(shop, provider, cart_id) == Books(
                stock={"mug": (5, 2), "tea": (10, 1)},
                reservations=[("mug", 2, "held"), ("tea", 1, "held")],
                payments=[(3300, "authorized")],
                orders=[(3300, "live")],
                cart=("completed", f"ord-{crashed.id}"),
                authorized=[3300],
            )
            assert path(shop.checkout(crashed.id)) == COMPLETED_PATH
            # authorized once; asked again (same key) only when the crash lost its answer
            calls = [("authorize", key)] * (2 if crash.step == "authorize" else 1)
        else:
            canceled = shop.engine.cancel(crashed.id, reason="the customer gave up").run

            assert canceled.status is Status.COMPENSATED
            assert books(shop, provider, cart_id) == Books(
                stock=STOCK,
                reservations=crash.reservations,
                payments=crash.payments,
                orders=crash.orders,
            )
            # compensated as if the crashed step had failed (an authorization in flight too)
            step_failed = f"{crash.step} failed"
            assert path(shop.checkout(canceled.id)) == [
                "cancel" if word == step_failed else word for word in crash.path
            ]
            calls = [("authorize", key), ("cancel", key)] if crash.provider_calls else []
        assert [(c.operation, c.idempotency_key) for c in provider.calls] == calls


# -- 5. compensations that fail ----------------------------------------------------------------


COMPENSATION_FAULTS = {
    # the stock is given back, then marking the reservation released fails: both roll back
    "reserve": "UPDATE shop_reservations",
    "authorize": None,  # the provider canceled, but its answer was lost
    "approved": "UPDATE shop_payments",
    "order": "UPDATE shop_orders",
}
ROLLED_BACK = Books(
    stock=STOCK,
    reservations=[("mug", 2, "released"), ("tea", 1, "released")],
    payments=[(3300, "canceled")],
    orders=[(3300, "canceled")],
)


@pytest.mark.parametrize("step", COMPENSATION_FAULTS)
def test_a_compensation_that_fails_once_still_compensates_fully(
    url: str, provider: FaultyProvider, clock: FakeClock, step: str
) -> None:
    with open_shop(url, provider, clock=clock, max_inline_sleep=0) as shop:
        faults = FailingStatements(shop.database)
        cart_id = shop.create_cart({"mug": 2, "tea": 1})
        statement = COMPENSATION_FAULTS[step]
        if statement is None:
            provider.fail_next("cancel", ProviderUnavailable("connection reset"), after=True)
            undo_fails = contextlib.nullcontext()
        else:
            undo_fails = faults.fail(statement, InjectedOutage("connection reset"))
        try:
            with (
                faults.fail("UPDATE shop_carts", InjectedFault("the cart broke")),
                undo_fails,
                pytest.raises(CheckoutFailed) as failed,
            ):
                shop.complete(cart_id)
        finally:
            faults.close()
        # the shop answers at once; the compensation's retry is due later (a worker's job)
        assert failed.value.run.status is Status.COMPENSATING

        recover_all(shop, clock, step=5)

        run = the_run(shop, cart_id)
        assert run.status is Status.COMPENSATED
        assert books(shop, provider, cart_id) == ROLLED_BACK
        undone = list(UNDO)
        retried = undone.index(f"undo {step}")
        undone.insert(retried, f"undo {step} failed, retry")
        assert path(run) == [*COMPLETED_PATH[:-1], "complete failed", *undone]


def test_a_compensation_that_keeps_failing_leaves_the_run_failed_until_retried(
    shop: Shop, provider: FaultyProvider, faults: FailingStatements
) -> None:
    cart_id = shop.create_cart({"mug": 2, "tea": 1})

    with (
        faults.fail("UPDATE shop_carts", InjectedFault("the cart broke")),
        faults.fail("UPDATE shop_orders", InjectedFault("the orders table is read-only")),
        pytest.raises(CheckoutFailed, match="could not be compensated") as failed,
    ):
        shop.complete(cart_id)

    # visible, never dropped: what was undone so far stays undone; the rest waits for an operator
    run = shop.checkout(failed.value.run.id)
    assert (run.status, run.state) == (Status.FAILED, "ordered")
    assert books(shop, provider, cart_id) == Books(
        stock={"mug": (5, 2), "tea": (10, 1)},
        reservations=[("mug", 2, "held"), ("tea", 1, "held")],
        payments=[(3300, "authorized")],
        orders=[(3300, "live")],
        authorized=[3300],
    )
    with pytest.raises(CheckoutInProgress):  # the cart stays taken until the run is settled
        shop.complete(cart_id)

    retried = shop.engine.retry(run.id)  # the cause is fixed

    assert retried.status is Status.COMPENSATED
    assert books(shop, provider, cart_id) == ROLLED_BACK


def test_an_authorization_whose_answer_is_lost_every_time_is_canceled_by_its_key(
    shop: Shop, provider: FaultyProvider
) -> None:
    cart_id = shop.create_cart({"mug": 2, "tea": 1})
    provider.fail_next("authorize", ProviderUnavailable("connection reset"), times=3, after=True)

    with pytest.raises(CheckoutFailed, match="connection reset"):
        shop.complete(cart_id)

    assert books(shop, provider, cart_id) == Books(
        stock=STOCK, reservations=[("mug", 2, "released"), ("tea", 1, "released")]
    )
    run = the_run(shop, cart_id)
    key = authorization_key(run.id)
    # three tries under one key: one authorization, canceled by that key
    assert [(c.operation, c.idempotency_key, c.result) for c in provider.calls] == [
        *[("authorize", key, "authorized")] * 3,
        ("cancel", key, "canceled"),
    ]
    assert path(run) == [
        "start",
        "validate",
        "reserve",
        "authorize failed, retry",
        "authorize failed, retry",
        "authorize failed",
        "undo authorize",
        "undo reserve",
    ]


# -- 6. stock ----------------------------------------------------------------------------------


def test_insufficient_stock_is_refused_before_anything_is_reserved(
    shop: Shop, provider: FaultyProvider
) -> None:
    taken = shop.complete(shop.create_cart({"mug": 4}))
    cart_id = shop.create_cart({"mug": 2})

    with pytest.raises(InsufficientStock, match="only 1 of mug left") as short:
        shop.complete(cart_id)

    error = short.value
    assert (error.status, error.sku, error.requested, error.available) == (422, "mug", 2, 1)
    assert books(shop, provider, cart_id) == Books(stock={"mug": (5, 4), "tea": (10, 0)})
    run = the_run(shop, cart_id)
    assert (run.status, path(run)) == (Status.COMPENSATED, ["start", "validate", "reserve failed"])
    assert [c.idempotency_key for c in provider.calls] == [authorization_key(taken.checkout_id)]


def test_a_short_second_sku_leaves_the_first_sku_untouched(
    shop: Shop, provider: FaultyProvider
) -> None:
    # SKUs are reserved in order: the mugs are taken first, then the tea falls short
    cart_id = shop.create_cart({"tea": 11, "mug": 2})

    with pytest.raises(InsufficientStock) as short:
        shop.complete(cart_id)

    assert (short.value.sku, short.value.requested, short.value.available) == ("tea", 11, 10)
    # the step's transaction rolled back: the mugs it had reserved are on the shelf again
    assert books(shop, provider, cart_id) == Books(stock=STOCK)
    assert provider.calls == []


# -- 7. carts that cannot be checked out -------------------------------------------------------


def _stale_price(shop: Shop) -> str:
    cart_id = shop.create_cart({"mug": 1})
    shop.set_price("mug", 1500)
    return cart_id


def _foreign_currency(shop: Shop) -> str:
    shop.add_product("cup", "Tea cup", unit_price=900, stock=3, currency="JPY")
    return shop.create_cart({"mug": 1, "cup": 1})


INVALID_CARTS: dict[str, tuple[Callable[[Shop], str], str]] = {
    "empty": (lambda shop: shop.create_cart({}), "is empty"),
    "zero quantity": (lambda shop: shop.create_cart({"mug": 0}), "at least 1"),
    "price changed": (_stale_price, "price of mug changed from 1250 to 1500"),
    "mixed currencies": (_foreign_currency, "one cart, one currency"),
}


@pytest.mark.parametrize("case", INVALID_CARTS)
def test_an_invalid_cart_is_refused_and_nothing_changes(
    shop: Shop, provider: FaultyProvider, case: str
) -> None:
    make_cart, message = INVALID_CARTS[case]
    cart_id = make_cart(shop)

    with pytest.raises(InvalidCart, match=message) as invalid:
        shop.complete(cart_id)

    assert invalid.value.status == 422
    assert books(shop, provider, cart_id) == Books(stock=STOCK)
    assert provider.calls == []
    run = the_run(shop, cart_id)
    assert (run.status, path(run)) == (Status.COMPENSATED, ["start", "validate failed"])


def test_an_unknown_cart_is_refused_before_any_checkout_runs(shop: Shop) -> None:
    with pytest.raises(CartNotFound, match="does not exist") as missing:
        shop.complete("cart-nobody-made")

    assert missing.value.status == 404
    assert shop.engine.list() == []


# -- 8. races ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shops", [1, 2], ids=["one shop", "two shops"])
def test_concurrent_completes_of_one_cart_make_one_order(
    url: str, provider: FaultyProvider, shops: int
) -> None:
    requests = 8
    with contextlib.ExitStack() as stack:
        # two shops: two engines (as two API servers), one database, one payment provider
        opened = [stack.enter_context(open_shop(url, provider)) for _ in range(shops)]
        cart_id = opened[0].create_cart({"mug": 2})
        start = threading.Barrier(requests)

        def complete(number: int) -> CheckoutResult | CheckoutError:
            start.wait(timeout=30)
            try:
                return opened[number % shops].complete(cart_id)
            except CheckoutError as error:
                return error

        with ThreadPoolExecutor(requests) as pool:
            answers = list(pool.map(complete, range(requests)))

        shop = opened[0]
        won = [a for a in answers if isinstance(a, CheckoutResult) and not a.already_completed]
        assert len(won) == 1, answers
        (winner,) = won
        for answer in answers:
            if isinstance(answer, CheckoutInProgress):
                assert answer.status == 409
            else:  # the order itself, or the order already made
                assert isinstance(answer, CheckoutResult), answer
                assert (answer.status, answer.order_id) == ("completed", winner.order_id)
        assert books(shop, provider, cart_id) == Books(
            stock={"mug": (5, 2), "tea": (10, 0)},
            reservations=[("mug", 2, "held")],
            payments=[(2 * MUG, "authorized")],
            orders=[(2 * MUG, "live")],
            cart=("completed", winner.order_id),
            authorized=[2 * MUG],
        )
        assert [c.idempotency_key for c in provider.calls] == [
            authorization_key(winner.checkout_id)
        ]
        # a request that read the cart open but started after the winner had finished: its
        # validation found the cart completed, and the shop answered with the winner's order
        for run in cart_runs(shop, cart_id):
            if run.id != winner.checkout_id:
                assert run.status is Status.COMPENSATED
                assert run.error.type == "definitions.checkout.errors.CartAlreadyCompleted"
                assert path(run) == ["start", "validate failed"]


def _worker(url: str, carts: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    root = str(HERE.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, *carts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )


def _wait_until_ready(worker: subprocess.Popen[str], *, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) for the worker's ``ready`` line."""
    assert worker.stdout is not None
    readable, _, _ = select.select([worker.stdout], [], [], timeout)
    # the worker prints nothing else before it is told to go: nothing is left buffered
    line = worker.stdout.readline() if readable else ""
    if line != "ready\n":
        _kill_if_running(worker)
        _, stderr = worker.communicate(timeout=30)
        pytest.fail(f"worker {worker.pid} did not get ready ({line!r}):\n{stderr}")


def _kill_if_running(worker: subprocess.Popen[str]) -> None:
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_hot_sku_is_never_oversold_by_concurrent_processes(
    url: str, provider: FaultyProvider
) -> None:
    units, carts_count, processes = 5, 20, 4  # 5 mugs, 20 customers, 4 API servers
    with open_shop(url, provider) as shop:
        carts = [shop.create_cart({"mug": 1}) for _ in range(carts_count)]
    reports = []
    with contextlib.ExitStack() as cleanup:
        workers = []
        for number in range(processes):
            worker = cleanup.enter_context(_worker(url, carts[number::processes]))
            cleanup.callback(_kill_if_running, worker)  # runs first: then the pipes close
            workers.append(worker)
        for worker in workers:  # every process has its shop open and its threads waiting
            _wait_until_ready(worker, timeout=60)
        for worker in workers:  # then all of them go at once
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=120)
            assert worker.returncode == 0, stderr
            reports.append(json.loads(stdout))

    outcomes = dict(o for report in reports for o in report["outcomes"])
    assert sorted(outcomes) == sorted(carts)
    completed = {cart for cart, o in outcomes.items() if o.startswith("completed:")}
    refused = {cart for cart, o in outcomes.items() if o.startswith("insufficient:mug:1:")}
    assert len(completed) == units, outcomes
    assert refused == set(carts) - completed, outcomes
    assert sum(report["authorized"] for report in reports) == units

    with open_shop(url, provider) as shop:
        stock = shop.stock("mug")
        assert (stock.stocked, stock.reserved, stock.available) == (units, units, 0)
        assert sorted((o.cart_id, o.canceled_at) for o in shop.orders()) == [
            (cart, None) for cart in sorted(completed)
        ]
        assert {(r.cart_id, r.status) for r in shop.reservations()} == {
            (cart, "held") for cart in completed
        }
        assert {(p.cart_id, p.status) for p in shop.payments()} == {
            (cart, "authorized") for cart in completed
        }
        runs = shop.engine.list(limit=1000)
        assert sorted(run.status for run in runs) == sorted(
            [Status.COMPLETED] * units + [Status.COMPENSATED] * (carts_count - units)
        )
        for cart in carts:
            assert shop.cart(cart).status == ("completed" if cart in completed else "open")


# -- 9. an unreliable provider ------------------------------------------------------------------


def test_a_flaky_provider_is_retried_under_one_idempotency_key(
    shop: Shop, provider: FaultyProvider
) -> None:
    cart_id = shop.create_cart({"mug": 1}, payment_method="card_flaky")  # fails twice

    result = shop.complete(cart_id)

    assert result.status == "completed"
    run = shop.checkout(result.checkout_id)
    assert path(run) == _with_retry(_with_retry(COMPLETED_PATH, "authorize"), "authorize")
    key = authorization_key(run.id)
    assert [(c.idempotency_key, c.result) for c in provider.calls] == [
        (key, "unavailable"),
        (key, "unavailable"),
        (key, "authorized"),
    ]
    assert books(shop, provider, cart_id) == Books(
        stock={"mug": (5, 1), "tea": (10, 0)},
        reservations=[("mug", 1, "held")],
        payments=[(MUG, "authorized")],
        orders=[(MUG, "live")],
        cart=("completed", result.order_id),
        authorized=[MUG],
    )


@pytest.mark.slow
def test_a_late_provider_answer_is_discarded_and_the_retry_completes(url: str) -> None:
    # the first call answers after 5.5 s; the step's timeout is 5 s. The engine stops
    # waiting for it at 5 s (a StepTimeout; the call runs on and its answer is ignored) and
    # retries, which the provider answers at once under the same key
    provider = SimulatedProvider(slow_seconds=5.5)
    try:
        with open_shop(url, provider) as shop:
            cart_id = shop.create_cart({"mug": 1}, payment_method="card_slow_once")

            result = shop.complete(cart_id)

            assert result.status == "completed"
            run = shop.checkout(result.checkout_id)
            assert path(run) == _with_retry(COMPLETED_PATH, "authorize")
            assert run.history[3].error.type == "StepTimeout"
            key = authorization_key(run.id)
            assert [(c.idempotency_key, c.result) for c in provider.calls] == [
                (key, "authorized"),
                (key, "authorized"),
            ]
            assert books(shop, provider, cart_id) == Books(
                stock={"mug": (5, 1), "tea": (10, 0)},
                reservations=[("mug", 1, "held")],
                payments=[(MUG, "authorized")],
                orders=[(MUG, "live")],
                cart=("completed", result.order_id),
                authorized=[MUG],
            )
    finally:
        provider.close()


# -- 10. where the shop's tables live ----------------------------------------------------------


def test_the_shop_tables_live_in_the_stores_schema(postgres_url: str) -> None:
    """In this session's schema through the URL's search_path, and in ``schema=`` when the
    store is given one: a shop never writes to another schema's tables (nor to ``public``)."""
    schema = f"shop_schema_{os.getpid()}"
    base = sa.engine.make_url(postgres_url).difference_update_query(["options"])
    admin = sa.create_engine(base)

    def schema_of(connection: sa.Connection, table: str) -> str:
        query = (
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = CAST(:t AS regclass)"
        )
        return connection.execute(sa.text(query), {"t": table}).scalar_one()

    try:
        with Shop.open(postgres_url, provider=SimulatedProvider()) as shop:
            with shop.database.connect() as connection:
                here = schema_of(connection, "statesaga_instances")
                assert {schema_of(connection, t) for t in SHOP_TABLES} == {here}
            assert here.startswith("statesaga_test_")

        store = SqlStore(
            base.render_as_string(hide_password=False), schema=schema, auto_migrate=True
        )
        with Shop.open(store, provider=SimulatedProvider()) as shop:
            shop.add_product("mug", "Enamel mug", unit_price=MUG, stock=1)
            assert shop.complete(shop.create_cart({"mug": 1})).status == "completed"
            with shop.database.connect() as connection:
                assert {schema_of(connection, t) for t in SHOP_TABLES} == {schema}
        with admin.connect() as connection:
            orders = f"SELECT count(*) FROM {schema}.shop_orders"
            assert connection.exec_driver_sql(orders).scalar_one() == 1
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


# -- opening an empty database from several processes at once ------------------------------


def race_to_create_tables(database: str, racers: int = 4) -> list[BaseException]:
    """``racers`` engines create the shop's tables at the same instant; what they raised."""
    engines = [sa.create_engine(database) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []

    def create(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            create_tables(engine)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=create, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for engine in engines:
        engine.dispose()
    return errors


def shop_tables(database: str) -> set[str]:
    engine = sa.create_engine(database)
    try:
        return set(sa.inspect(engine).get_table_names()) & set(Base.metadata.tables)
    finally:
        engine.dispose()


def test_shops_opening_a_new_sqlite_database_at_once_all_get_the_tables(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'new.db'}"
    assert race_to_create_tables(database) == []
    assert shop_tables(database) == set(Base.metadata.tables)


def test_shops_opening_a_new_postgres_schema_at_once_all_get_the_tables(postgres_url: str) -> None:
    schema = f"shop_race_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    database = (
        sa.make_url(postgres_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        assert race_to_create_tables(database) == []
        assert shop_tables(database) == set(Base.metadata.tables)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
