"""The saga the crash tests kill, shared by the test process and its children.

``CrashCheckout`` has four steps, each exercising one kind of effect:

- ``reserve`` is *transactional*: it inserts a row into the user table
  ``effects`` through ``ctx.connection``, so the row commits with the
  transition or not at all; its compensation counts the release in the row, in
  the compensating transition's transaction (so exactly once);
- ``charge`` calls an "external" payment service (``Ledger``, an append-only
  file) with the step's idempotency key; its compensation calls the service's
  refund with its own key;
- ``ship`` is the pivot: after it the saga only goes forward (with
  ``fail_shipping`` it fails, non-retryably, before pivoting, so the saga
  compensates);
- ``notify`` runs after the pivot and calls the service once more.

Steps reach their resources through the saga input (the database file and
the ledger file), so that any process can run or recover an instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga import NonRetryableError, Saga, State, StepContext

__all__ = [
    "ABANDON_AT",
    "CrashCheckout",
    "Ledger",
    "Order",
    "Progress",
    "ensure_effects_table",
    "read_effects",
]

#: where the ``abandon`` child walks away from its runs, round robin: (boundary, shipping fails)
ABANDON_AT = (
    ("before:reserve", False),
    ("before:charge", False),
    ("after:charge", False),  # the charge is made again, with the same key
    ("before:ship", False),
    ("before:notify", False),
    ("before:charge.undo", True),
)

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS effects ("
    " instance_id TEXT NOT NULL,"
    " step TEXT NOT NULL,"
    " released INTEGER NOT NULL DEFAULT 0)"  # no unique key: a duplicate write must show
)


@attrs.frozen
class Order:
    """What a checkout is started with."""

    order_id: str
    database: str
    """Path of the SQLite file that holds the ``effects`` table."""
    ledger: str
    """Path of the external service's call log."""
    fail_shipping: bool = False
    step_delay: float = 0.0
    """Seconds every step sleeps, so that concurrent recoverers overlap."""


@attrs.define
class Progress:
    """The context a checkout carries from step to step."""

    reserved: bool = False
    charge_key: str | None = None
    shipped: bool = False
    notified: bool = False


class Ledger:
    """A recorded external service: every call is one JSON line appended to a file.

    One ``os.write`` on an ``O_APPEND`` descriptor per call: a line is either
    wholly in the file or not at all, even if the caller is killed right after.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, action: str, idempotency_key: str, instance_id: str) -> None:
        """Record one call of ``action`` made with ``idempotency_key``."""
        line = json.dumps(
            {"action": action, "key": idempotency_key, "instance": instance_id, "pid": os.getpid()}
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def calls(self) -> list[dict[str, Any]]:
        """Every call recorded so far, oldest first."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]


def ensure_effects_table(engine: sa.Engine) -> None:
    """Create the user table the transactional step writes to."""
    with engine.begin() as connection:
        connection.exec_driver_sql(EFFECTS_DDL)


def read_effects(database: str) -> list[tuple[str, str, int]]:
    """Every ``effects`` row as ``(instance_id, step, released)``."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        return list(
            connection.execute("SELECT instance_id, step, released FROM effects ORDER BY rowid")
        )


def _pace(ctx: StepContext[Order, Progress]) -> None:
    if ctx.input.step_delay:
        time.sleep(ctx.input.step_delay)


def reserve_stock(ctx: StepContext[Order, Progress]) -> Progress:
    """Write the reservation in the transition's own transaction."""
    _pace(ctx)
    ctx.connection.exec_driver_sql(
        "INSERT INTO effects (instance_id, step) VALUES (?, 'reserve')", (ctx.instance_id,)
    )
    return attrs.evolve(ctx.data, reserved=True)


def release_stock(ctx: StepContext[Order, Progress]) -> None:
    """Mark the reservation released, in the compensating transition's transaction."""
    _pace(ctx)
    ctx.connection.exec_driver_sql(
        "UPDATE effects SET released = released + 1 WHERE instance_id = ? AND step = 'reserve'",
        (ctx.instance_id,),
    )


def charge_payment(ctx: StepContext[Order, Progress]) -> Progress:
    """Charge through the external service, which dedupes on the idempotency key."""
    _pace(ctx)
    Ledger(ctx.input.ledger).call("charge", ctx.idempotency_key, ctx.instance_id)
    return attrs.evolve(ctx.data, charge_key=ctx.idempotency_key)


def refund_payment(ctx: StepContext[Order, Progress]) -> None:
    """Refund the charge the step recorded."""
    _pace(ctx)
    assert ctx.data.charge_key is not None, "a refund needs the charge it undoes"
    Ledger(ctx.input.ledger).call("refund", ctx.idempotency_key, ctx.instance_id)


def ship_parcel(ctx: StepContext[Order, Progress]) -> Progress:
    """The pivot: once shipped, the checkout only goes forward."""
    _pace(ctx)
    if ctx.input.fail_shipping:
        raise NonRetryableError(f"order {ctx.input.order_id} cannot ship: out of stock")
    Ledger(ctx.input.ledger).call("ship", ctx.idempotency_key, ctx.instance_id)
    return attrs.evolve(ctx.data, shipped=True)


def notify_customer(ctx: StepContext[Order, Progress]) -> Progress:
    """After the pivot: tell the customer (retried, never undone)."""
    _pace(ctx)
    Ledger(ctx.input.ledger).call("notify", ctx.idempotency_key, ctx.instance_id)
    return attrs.evolve(ctx.data, notified=True)


class CrashCheckout(Saga[Order, Progress]):
    """Reserve, charge, ship (the pivot), notify."""

    name = "crash-checkout"
    version = 1

    new = State(initial=True)
    reserved = State()
    charged = State()
    shipped = State()
    done = State(final=True)

    reserve = new.to(reserved).run(reserve_stock, undo=release_stock, transactional=True)
    charge = reserved.to(charged).run(charge_payment, undo=refund_payment)
    ship = charged.to(shipped).run(ship_parcel, pivot=True)
    notify = shipped.to(done).run(notify_customer)
