"""The shop's tables, as SQLAlchemy ORM models.

They live in the same database as the saga store, so that a checkout step's
writes commit in the transaction of the transition that runs it. Every mutable
row carries a ``version`` column that SQLAlchemy checks and bumps on each ORM
update (``version_id_col``): a write based on a stale read fails instead of
silently overwriting. Stock is guarded twice more by the database itself: a
check constraint (``0 <= reserved <= stocked``) and, for orders, a partial
unique index (at most one order per cart that is not canceled).

Amounts are integers in the currency's minor unit (cents).

>>> import sqlalchemy as sa
>>> engine = sa.create_engine("sqlite://")
>>> create_tables(engine)
>>> sorted(Base.metadata.tables)[:3]
['shop_cart_lines', 'shop_carts', 'shop_inventory']
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "Cart",
    "CartLine",
    "InventoryItem",
    "Order",
    "Payment",
    "Reservation",
    "create_tables",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, in UTC (the shop stores every timestamp in UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The shop's models; their own metadata, beside the saga store's tables."""

    metadata = sa.MetaData()


class InventoryItem(Base):
    """A product's stock: ``stocked`` units on the shelf, ``reserved`` of them promised."""

    __tablename__ = "shop_inventory"
    __table_args__ = (
        sa.CheckConstraint("reserved >= 0 AND reserved <= stocked", name="stock_never_oversold"),
    )

    sku: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    unit_price: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    stocked: Mapped[int]
    reserved: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def available(self) -> int:
        """Units that can still be reserved."""
        return self.stocked - self.reserved


class Cart(Base):
    """A customer's cart; ``completed`` once its checkout made an order."""

    __tablename__ = "shop_carts"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(sa.String(3))
    payment_method: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    completed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    order_id: Mapped[str | None] = mapped_column(sa.String(64))
    version: Mapped[int] = mapped_column(default=1)

    lines: Mapped[list[CartLine]] = relationship(
        back_populates="cart", order_by="CartLine.sku", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class CartLine(Base):
    """One product in a cart, with the unit price the customer was shown."""

    __tablename__ = "shop_cart_lines"
    __table_args__ = (sa.UniqueConstraint("cart_id", "sku"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    cart_id: Mapped[str] = mapped_column(sa.ForeignKey("shop_carts.id"))
    sku: Mapped[str] = mapped_column(sa.ForeignKey("shop_inventory.sku"))
    quantity: Mapped[int]
    unit_price: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    version: Mapped[int] = mapped_column(default=1)

    cart: Mapped[Cart] = relationship(back_populates="lines")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Reservation(Base):
    """Units of one SKU held for one checkout: ``held``, then ``released`` if it compensates."""

    __tablename__ = "shop_reservations"

    id: Mapped[str] = mapped_column(sa.String(140), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    cart_id: Mapped[str] = mapped_column(sa.ForeignKey("shop_carts.id"))
    sku: Mapped[str] = mapped_column(sa.ForeignKey("shop_inventory.sku"))
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(16), default="held")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Payment(Base):
    """The shop's record of a provider authorization: ``authorized``, ``captured``, ``canceled``."""

    __tablename__ = "shop_payments"

    id: Mapped[str] = mapped_column(sa.String(140), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    cart_id: Mapped[str] = mapped_column(sa.ForeignKey("shop_carts.id"))
    provider_ref: Mapped[str] = mapped_column(sa.String(140))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    canceled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Order(Base):
    """What a completed checkout made; a compensated one leaves it with ``canceled_at`` set."""

    __tablename__ = "shop_orders"
    __table_args__ = (
        # at most one live order per cart, whatever the application does
        sa.Index(
            "shop_orders_one_live_per_cart",
            "cart_id",
            unique=True,
            sqlite_where=sa.text("canceled_at IS NULL"),
            postgresql_where=sa.text("canceled_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(140), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    cart_id: Mapped[str] = mapped_column(sa.ForeignKey("shop_carts.id"))
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("shop_payments.id"))
    total: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    canceled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


def create_tables(bind: sa.Engine | sa.Connection) -> None:
    """Create the shop's tables where they do not exist yet (a demo's or a test's set-up).

    Several processes may open an empty database at once: the one that loses the
    race to create a table finds it there on a second look.
    """
    for attempt in range(1, 6):
        try:
            Base.metadata.create_all(bind)
            return
        except sa.exc.DBAPIError:  # another process created one meanwhile: look again
            if attempt == 5:
                raise
            time.sleep(0.05 * attempt)
