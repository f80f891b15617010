"""The shop: its catalog and carts, and checkout through the complete-cart saga.

:class:`Shop` is what the HTTP API, the demo and the tests call. It runs the
saga with the entity key ``cart:complete:{cart_id}``, so that two requests to
complete one cart never both run: the second is told the checkout is already
in progress (:class:`CheckoutInProgress`). Completing a cart that is already
completed returns its order; nothing runs again.

>>> from definitions.checkout.provider import SimulatedProvider
>>> with Shop.open("sqlite://", provider=SimulatedProvider()) as shop:
...     shop.add_product("mug", "Enamel mug", unit_price=1250, stock=5)
...     cart_id = shop.create_cart({"mug": 2})
...     result = shop.complete(cart_id, correlation_id="req-1")
...     (result.status, result.total, shop.stock("mug"))
('completed', 2500, StockLevel(stocked=5, reserved=2))
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

import attrs
import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from definitions.checkout.errors import (
    CartAlreadyCompleted,
    CartNotFound,
    CheckoutFailed,
    CheckoutInProgress,
    CheckoutTimedOut,
    InvalidCart,
    PaymentDeclined,
    step_error,
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
from definitions.checkout.provider import PaymentProvider, SimulatedProvider, WebhookEvent
from definitions.checkout.saga import CompleteCart, CompleteCartInput
from definitions.checkout.webhooks import WebhookReceipt, declined_by_customer, receive_webhook
from statesaga import EntityBusy, Run, Status
from statesaga.engine import Engine
from statesaga.settings import Settings
from statesaga.store import SqlStore

__all__ = ["CheckoutResult", "Shop", "StockLevel", "WebhookReceipt", "cart_key"]

SAGA = CompleteCart.name


def cart_key(cart_id: str) -> str:
    """The entity key a checkout of ``cart_id`` holds."""
    return f"cart:complete:{cart_id}"


@attrs.frozen
class StockLevel:
    """A SKU's units on the shelf and units promised to checkouts."""

    stocked: int
    reserved: int

    @property
    def available(self) -> int:
        """Units that can still be reserved."""
        return self.stocked - self.reserved


@attrs.frozen
class CheckoutResult:
    """What completing a cart gave: an order, or a payment waiting for the customer.

    Attributes:
        status: ``completed``; ``requires_action`` (3-D Secure: the provider's
            webhook will finish the checkout); or ``processing`` (a retry was put
            off: a worker finishes the checkout).
        already_completed: the cart was completed before this request; its order is returned.
        run: the checkout run (``None`` when the cart was completed before and nothing ran).
    """

    cart_id: str
    status: Literal["completed", "requires_action", "processing"]
    order_id: str | None
    total: int
    currency: str
    checkout_id: str | None
    provider_ref: str | None = None
    already_completed: bool = False
    run: Run | None = None


class Shop:
    """The shop's operations over one database (the saga store's).

    Args:
        engine: a statesaga engine on the shop's database, with ``CompleteCart``
            registered and a :class:`PaymentProvider` among its resources.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store: SqlStore = engine.store  # type: ignore[assignment]
        self.database: sa.Engine = self.store.engine
        engine.register(CompleteCart)

    @classmethod
    def open(
        cls,
        database: str | SqlStore = "sqlite:///shop.db",
        *,
        provider: PaymentProvider | None = None,
        resources: Iterable[object] = (),
        **engine_options: Any,
    ) -> Self:
        """A shop on ``database``: the saga store and the shop's tables, created if missing.

        ``database`` is a URL, or a :class:`~statesaga.store.SqlStore` made with
        options of its own (its pool sizes, a schema).

        ``provider`` defaults to a :class:`SimulatedProvider`; ``engine_options``
        go to :class:`~statesaga.engine.Engine` (locks, lease, clock...).
        """
        provider = provider or SimulatedProvider()
        engine = Engine(database, resources=[provider, *resources], **engine_options)
        create_tables(engine.store.engine)  # type: ignore[attr-defined]
        return cls(engine)

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        provider: PaymentProvider | None = None,
        resources: Iterable[object] = (),
        **overrides: Any,
    ) -> Self:
        """A shop on the engine :meth:`Engine.from_settings <statesaga.engine.Engine.from_settings>`
        builds: the same database, schema, Redis locks, lease and deadline as ``statesaga
        worker`` reads (``STATESAGA_*``, ``statesaga.toml``; ``overrides`` win).

        The shop's tables are created where missing, next to the store's (in its schema).
        """
        provider = provider or SimulatedProvider()
        engine = Engine.from_settings(settings, resources=[provider, *resources], **overrides)
        try:
            create_tables(engine.store.engine)  # type: ignore[attr-defined]
        except BaseException:
            engine.close()
            raise
        return cls(engine)

    def close(self) -> None:
        """Close the engine (and its connections)."""
        self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- catalog and carts ----------------------------------------------------------------

    def add_product(
        self, sku: str, name: str, *, unit_price: int, stock: int, currency: str = "EUR"
    ) -> None:
        """Put a product on sale with ``stock`` units."""
        with Session(self.database) as session, session.begin():
            session.add(
                InventoryItem(
                    sku=sku,
                    name=name,
                    unit_price=unit_price,
                    currency=currency,
                    stocked=stock,
                    reserved=0,
                )
            )

    def set_price(self, sku: str, unit_price: int) -> None:
        """Change a product's price (carts made before it then fail validation)."""
        with Session(self.database) as session, session.begin():
            session.get_one(InventoryItem, sku).unit_price = unit_price

    def create_cart(
        self,
        items: Mapping[str, int],
        *,
        payment_method: str = "card_ok",
        currency: str = "EUR",
        cart_id: str | None = None,
    ) -> str:
        """A new open cart with ``items`` (SKU to quantity) at today's prices; its id."""
        cart_id = cart_id or f"cart-{uuid.uuid4().hex[:12]}"
        with Session(self.database) as session, session.begin():
            cart = Cart(id=cart_id, currency=currency, payment_method=payment_method)
            for sku, quantity in items.items():
                item = session.get(InventoryItem, sku)
                if item is None:
                    raise InvalidCart(f"no product {sku!r} in the catalog", cart_id=cart_id)
                cart.lines.append(
                    CartLine(
                        sku=sku,
                        quantity=quantity,
                        unit_price=item.unit_price,
                        currency=item.currency,
                    )
                )
            session.add(cart)
        return cart_id

    def stock(self, sku: str) -> StockLevel:
        """A SKU's stock level."""
        # reads take no write lock (on SQLite a plain session's would queue behind writers)
        with self.store.reading() as connection, Session(connection) as session:
            item = session.get_one(InventoryItem, sku)
            return StockLevel(item.stocked, item.reserved)

    def cart(self, cart_id: str) -> Cart:
        """A cart with its lines (detached from any session).

        Raises:
            CartNotFound: no such cart.
        """
        with (
            self.store.reading() as connection,
            Session(connection, expire_on_commit=False) as session,
        ):
            cart = session.scalars(
                sa.select(Cart).where(Cart.id == cart_id).options(selectinload(Cart.lines))
            ).one_or_none()
            if cart is None:
                raise CartNotFound(
                    f"cart {cart_id!r} does not exist: create it first", cart_id=cart_id
                )
            session.expunge_all()
            return cart

    def orders(self, cart_id: str | None = None) -> list[Order]:
        """The orders (of one cart, or all), canceled ones included."""
        return self._rows(Order, cart_id)

    def payments(self, cart_id: str | None = None) -> list[Payment]:
        """The payments booked (of one cart, or all)."""
        return self._rows(Payment, cart_id)

    def reservations(self, cart_id: str | None = None) -> list[Reservation]:
        """The reservations made (of one cart, or all), released ones included."""
        return self._rows(Reservation, cart_id)

    def _rows(self, model: Any, cart_id: str | None) -> list[Any]:
        query = sa.select(model).order_by(model.id)
        if cart_id is not None:
            query = query.where(model.cart_id == cart_id)
        with (
            self.store.reading() as connection,
            Session(connection, expire_on_commit=False) as session,
        ):
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows

    # -- checkout ---------------------------------------------------------------------------

    def complete(self, cart_id: str, *, correlation_id: str | None = None) -> CheckoutResult:
        """Complete the cart: an order, a payment waiting for the customer, or an error.

        Raises:
            CartNotFound: (404) no such cart.
            CheckoutInProgress: (409) a checkout of this cart is running or waiting.
            InvalidCart, InsufficientStock: (422) nothing was changed.
            PaymentDeclined: (402) everything done so far was compensated.
            CheckoutTimedOut: (504) the deadline passed; everything was compensated.
            CheckoutFailed: (500) anything else; ``error.run`` tells where it stopped.
        """
        cart = self.cart(cart_id)
        if cart.status == "completed":
            return self._existing_order(cart)
        try:
            run = self.engine.start(
                CompleteCart,
                CompleteCartInput(cart_id),
                key=cart_key(cart_id),
                correlation_id=correlation_id,
            )
        except EntityBusy as busy:
            running = self.engine.list(saga=SAGA, key=cart_key(cart_id), limit=1)
            where = f" (checkout {running[0].id}, {running[0].state})" if running else ""
            then = "wait for that checkout to end, then look at its result"
            if running and running[0].status is Status.FAILED:
                then = (
                    "that checkout failed while compensating and needs an operator: fix "
                    f"the cause, then `statesaga retry {running[0].id}`"
                )
            raise CheckoutInProgress(
                f"cart {cart_id!r} is already being checked out{where}: {then}",
                cart_id=cart_id,
                run=running[0] if running else None,
            ) from busy
        return self.result(run)

    def result(self, run: Run) -> CheckoutResult:
        """What a checkout run amounts to, or the error it ended with (raised)."""
        cart_id = run.input.cart_id
        if run.status is Status.COMPLETED:
            receipt = run.output
            assert receipt is not None  # a completed checkout always has its receipt
            return CheckoutResult(
                cart_id,
                "completed",
                receipt.order_id,
                receipt.total,
                receipt.currency,
                run.id,
                run.data.provider_ref,
                run=run,
            )
        if run.status in (Status.WAITING, Status.RUNNING):
            # waiting: for the customer's 3-D Secure; running: a retry was put off for a
            # worker to pick up (the engine gave the run back rather than sleep in here)
            waits = run.status is Status.WAITING and run.state == "awaiting_payment"
            return CheckoutResult(
                cart_id,
                "requires_action" if waits else "processing",
                None,
                run.data.total,
                run.data.currency,
                run.id,
                run.data.provider_ref,
                run=run,
            )
        error = run.error
        message = "the checkout failed" if error is None else error.message
        if run.status is Status.FAILED:
            raise CheckoutFailed(
                f"checkout {run.id} of cart {cart_id!r} could not be compensated ({message}); "
                f"it is left failed: fix the cause, then `statesaga retry {run.id}`",
                cart_id=cart_id,
                run=run,
            )
        raised = step_error(error)
        if isinstance(raised, CartAlreadyCompleted):
            return attrs.evolve(self._existing_order(self.cart(cart_id)), run=run)
        if declined_by_customer(error):
            # the customer failed 3-D Secure: a declined payment, not a failed checkout
            raise PaymentDeclined(message, cart_id=cart_id, run=run)
        if error is not None and error.kind.is_timeout:  # the deadline, the wait or the provider
            raise CheckoutTimedOut(
                f"checkout {run.id} of cart {cart_id!r} did not finish in time ({message}); "
                "everything it did was undone: the customer may try again",
                cart_id=cart_id,
                run=run,
            )
        if raised is None:
            raise CheckoutFailed(message, cart_id=cart_id, run=run)
        # the step's own error, with the values it saw (the stock when it fell short),
        # about this checkout (a provider's decline does not know the cart)
        raised.cart_id, raised.run = cart_id, run
        raise raised

    def _existing_order(self, cart: Cart) -> CheckoutResult:
        order = next(o for o in self.orders(cart.id) if o.canceled_at is None)
        return CheckoutResult(
            cart.id,
            "completed",
            order.id,
            order.total,
            order.currency,
            order.checkout_id,
            already_completed=True,
        )

    def payment_webhook(self, event: WebhookEvent) -> Run | None:
        """Deliver the provider's webhook; the checkout it concerns, as it stands after.

        See :meth:`receive_webhook`, which also says what became of the delivery.
        """
        return self.receive_webhook(event).run

    def receive_webhook(self, event: WebhookEvent) -> WebhookReceipt:
        """Check the provider's webhook against the provider, then hand it to the checkout.

        The payment's status is read back from the provider first: a webhook that
        says ``succeeded`` for a payment the provider still holds as
        ``requires_action`` (forged, or premature) changes nothing. Then the
        event goes to the run's durable inbox, deduplicated by ``event.id``,
        whether or not the run is busy: a success resumes the checkout (order,
        cart completed), a failure cancels it, which compensates. An event that
        comes before the checkout waits for it is kept until it does; one that
        comes after the checkout ended is recorded as not accepted. Providers
        deliver at least once, so none of these is an error.

        Raises:
            PaymentNotSettled: (409) the provider does not hold the payment as the
                webhook says; nothing was recorded.
            ProviderUnavailable: the provider could not be asked; nothing was recorded.
        """
        return receive_webhook(self.engine, event, key=cart_key(event.reference))

    def checkout(self, checkout_id: str) -> Run:
        """A checkout run with its history."""
        return self.engine.get(checkout_id)
