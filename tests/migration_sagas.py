"""Two versions of an order saga, the second declaring how runs of the first move onto it.

Version 1 reserves stock and waits for the payment in ``awaiting_payment``.
Version 2 renames that state ``awaiting_confirmation``, records a note in its
new context type, and ships after the payment. ``journal`` records which
version's steps ran.
"""

from __future__ import annotations

import threading

import attrs

from statesaga import Migration, Saga, State, StepContext


@attrs.frozen
class Order:
    order_id: str
    amount: int = 10


@attrs.frozen
class Reserved:
    reserved: bool = False


@attrs.frozen
class ReservedV2:
    reserved: bool = False
    note: str = ""
    shipped: bool = False


class Journal:
    """What the steps did, and a gate a step can wait on (to hold a run's lease)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hold = False
        self.entered = threading.Event()
        self.gate = threading.Event()


journal = Journal()


def reserve(ctx: StepContext[Order, Reserved]) -> Reserved:
    journal.calls.append("v1.reserve")
    if journal.hold:
        journal.entered.set()
        journal.gate.wait(30)
    return Reserved(reserved=True)


def release(ctx: StepContext[Order, Reserved]) -> None:
    journal.calls.append("v1.release")


class OrderV1(Saga[Order, Reserved]):
    name = "order"
    version = 1

    new = State(initial=True)
    reserved = State()
    awaiting_payment = State(timeout=3600)
    done = State(final=True)

    reserve = new.to(reserved).run(reserve, undo=release)
    wait = reserved.to(awaiting_payment)
    pay = awaiting_payment.to(done).on("paid")


def upgrade(old: Reserved) -> ReservedV2:
    """The new context from the old one; refuses an order it cannot carry over."""
    return ReservedV2(reserved=old.reserved, note="moved from v1")


def reserve_v2(ctx: StepContext[Order, ReservedV2]) -> ReservedV2:
    journal.calls.append("v2.reserve")
    return attrs.evolve(ctx.data, reserved=True)


def release_v2(ctx: StepContext[Order, ReservedV2]) -> None:
    journal.calls.append("v2.release")


def ship(ctx: StepContext[Order, ReservedV2]) -> ReservedV2:
    journal.calls.append("v2.ship")
    return attrs.evolve(ctx.data, shipped=True)


class OrderV2(Saga[Order, ReservedV2]):
    name = "order"
    version = 2
    migrates_from = Migration(
        OrderV1, states={"awaiting_payment": "awaiting_confirmation"}, context=upgrade
    )

    new = State(initial=True)
    reserved = State()
    awaiting_confirmation = State(timeout=3600)
    confirmed = State()
    done = State(final=True)

    reserve = new.to(reserved).run(reserve_v2, undo=release_v2)
    wait = reserved.to(awaiting_confirmation)
    pay = awaiting_confirmation.to(confirmed).on("paid")
    send = confirmed.to(done).run(ship, pivot=True)


def picky_upgrade(old: Reserved) -> ReservedV2:
    """Refuses every run: what a context function does with data it cannot carry over."""
    raise ValueError("no note for this order")


class OrderV3(Saga[Order, ReservedV2]):
    """A third version whose migration from version 1 refuses every run's context."""

    name = "order"
    version = 3
    migrates_from = Migration(
        OrderV1, states={"awaiting_payment": "awaiting_confirmation"}, context=picky_upgrade
    )

    new = State(initial=True)
    reserved = State()
    awaiting_confirmation = State(timeout=3600)
    done = State(final=True)

    reserve = new.to(reserved).run(reserve_v2, undo=release_v2)
    wait = reserved.to(awaiting_confirmation)
    pay = awaiting_confirmation.to(done).on("paid")
