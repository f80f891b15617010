"""The whole trip of issue 17, every feature of the DSL in one saga: the flight and the
hotel booked in parallel branches, a package (a car and its extras) booked by a child
saga, the supplier's confirmation awaited for as long as the trip allows (a guard
refuses a confirmation for another trip), the card charged as the pivot (voided if
its outcome is lost), the tickets issued.

``Suppliers`` is the outside world; it records every booking, cancellation, charge,
void and ticket by the idempotency key it came with, as real providers do.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from statesaga import Branch, Event, Retry, Saga, State, StepContext

# -- the domain ----------------------------------------------------------------------------------


@attrs.frozen
class WholeTripRequest:
    trip_id: str
    amount: int = 1500
    confirm_within: float | None = 3600.0
    """the supplier's confirmation window, seconds (``None``: no window)"""


@attrs.frozen
class Package:
    car: str
    extras: str


@attrs.frozen
class WholeTripData:
    flight: str | None = None
    hotel: str | None = None
    package: Package | None = None
    charge_id: str | None = None
    tickets: str | None = None


@attrs.frozen
class SupplierConfirmation:
    trip_id: str


class Suppliers:
    """An airline, a hotel, a car rental, an extras desk, a card processor and a ticket
    office, each deduplicating by idempotency key."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, str]] = {}  # key -> (trip, what is booked)
        self.cancelled: dict[str, tuple[str, str]] = {}  # key -> what a cancel released
        self.charges: dict[str, int] = {}  # key -> the amount taken
        self.voided: dict[str, int] = {}  # key -> the amount a void gave back
        self.tickets: dict[str, str] = {}  # key -> trip
        # a key once cancelled or voided is never honoured again: a paused holder's late
        # call under it is refused, not booked behind the saga's back
        self.spent_keys: set[str] = set()
        self.calls: list[str] = []

    def book(self, ctx: StepContext[Any, Any], trip: str, what: str) -> None:
        self.calls.append(f"book {what}")
        if ctx.idempotency_key not in self.spent_keys:
            self.held[ctx.idempotency_key] = (trip, what)

    def cancel(self, ctx: StepContext[Any, Any], what: str) -> None:
        """Release what was booked under the step's key (nothing, if it never was)."""
        self.calls.append(f"cancel {what}")
        key = ctx.idempotency_key.removesuffix(":undo")
        self.spent_keys.add(key)
        released = self.held.pop(key, None)
        if released is not None:
            self.cancelled[key] = released

    def holdings(self, trip: str) -> list[str]:
        """What is booked for ``trip``, sorted."""
        return sorted(what for held_for, what in self.held.values() if held_for == trip)

    def charged(self) -> int:
        return sum(self.charges.values())


FAST = Retry(attempts=3, initial_interval=0.01, jitter=0.0)

# -- the child: a car and its extras ------------------------------------------------------------


@attrs.frozen
class PackageRequest:
    trip_id: str


@attrs.frozen
class PackageData:
    car: str | None = None
    extras: str | None = None


PackageCtx = StepContext[PackageRequest, PackageData]


def rent_car(ctx: PackageCtx) -> PackageData:
    ctx.resource(Suppliers).book(ctx, ctx.input.trip_id, "car")
    return attrs.evolve(ctx.data, car=f"c-{ctx.input.trip_id}")


def return_car(ctx: PackageCtx) -> None:
    ctx.resource(Suppliers).cancel(ctx, "car")


def add_extras(ctx: PackageCtx) -> PackageData:
    ctx.resource(Suppliers).book(ctx, ctx.input.trip_id, "extras")
    return attrs.evolve(ctx.data, extras=f"x-{ctx.input.trip_id}")


def drop_extras(ctx: PackageCtx) -> None:
    ctx.resource(Suppliers).cancel(ctx, "extras")


class BookCarPackage(Saga[PackageRequest, PackageData, Package]):
    """A car, then its extras (a child of the trip: no pivot, everything undoable)."""

    name = "book-car-package"

    new = State(initial=True)
    car_rented = State()
    booked = State(final=True)

    car = new.to(car_rented).run(rent_car, undo=return_car, undo_on_failure=True, retry=FAST)
    extras = car_rented.to(booked).run(
        add_extras, undo=drop_extras, undo_on_failure=True, retry=FAST
    )

    @staticmethod
    def output(request: PackageRequest, data: PackageData) -> Package:
        return Package(car=data.car or "", extras=data.extras or "")


# -- the parent: the whole trip ------------------------------------------------------------------

Ctx = StepContext[WholeTripRequest, WholeTripData]


def book_flight(ctx: Ctx) -> WholeTripData:
    ctx.resource(Suppliers).book(ctx, ctx.input.trip_id, "flight")
    return attrs.evolve(ctx.data, flight=f"f-{ctx.input.trip_id}")


def cancel_flight(ctx: Ctx) -> None:
    ctx.resource(Suppliers).cancel(ctx, "flight")


def book_hotel(ctx: Ctx) -> WholeTripData:
    ctx.resource(Suppliers).book(ctx, ctx.input.trip_id, "hotel")
    return attrs.evolve(ctx.data, hotel=f"h-{ctx.input.trip_id}")


def cancel_hotel(ctx: Ctx) -> None:
    ctx.resource(Suppliers).cancel(ctx, "hotel")


def package_for(ctx: Ctx) -> PackageRequest:
    return PackageRequest(ctx.input.trip_id)


def take_package(ctx: Ctx, package: Package) -> WholeTripData:
    return attrs.evolve(ctx.data, package=package)


def confirmation_window(ctx: Ctx) -> timedelta | None:
    window = ctx.input.confirm_within
    return None if window is None else timedelta(seconds=window)


def for_this_trip(ctx: Ctx) -> bool:
    return bool(ctx.event.trip_id == ctx.input.trip_id)


def charge_card(ctx: Ctx) -> WholeTripData:
    suppliers = ctx.resource(Suppliers)
    suppliers.calls.append("charge")
    if ctx.idempotency_key not in suppliers.spent_keys:
        suppliers.charges[ctx.idempotency_key] = ctx.input.amount
    return attrs.evolve(ctx.data, charge_id=ctx.idempotency_key)


def void_charge(ctx: Ctx) -> None:
    """Void whatever the charge under this key took (nothing, if it never got through)."""
    suppliers = ctx.resource(Suppliers)
    suppliers.calls.append("void")
    key = ctx.idempotency_key.removesuffix(":undo")
    suppliers.spent_keys.add(key)
    taken = suppliers.charges.pop(key, None)
    if taken is not None:
        suppliers.voided[key] = taken


def issue_tickets(ctx: Ctx) -> WholeTripData:
    suppliers = ctx.resource(Suppliers)
    suppliers.calls.append("tickets")
    suppliers.tickets[ctx.idempotency_key] = ctx.input.trip_id
    return attrs.evolve(ctx.data, tickets=f"t-{ctx.input.trip_id}")


class BookWholeTrip(Saga[WholeTripRequest, WholeTripData]):
    """Flight and hotel at once, the package, the supplier's word, the charge, the tickets."""

    name = "book-whole-trip"
    supplier_confirmed = Event[SupplierConfirmation]()

    new = State(initial=True)
    booked = State()
    awaiting_supplier = State(timeout=confirmation_window)
    confirmed = State()
    charged = State()
    ticketed = State(final=True)

    book = new.to(booked).parallel(
        flight=Branch(
            book_flight, undo=cancel_flight, undo_on_failure=True, retry=FAST, writes="flight"
        ),
        hotel=Branch(
            book_hotel, undo=cancel_hotel, undo_on_failure=True, retry=FAST, writes="hotel"
        ),
    )
    package = booked.to(awaiting_supplier).child(
        BookCarPackage, input=package_for, output=take_package
    )
    confirm = awaiting_supplier.to(confirmed).on(supplier_confirmed).when(for_this_trip)
    charge = confirmed.to(charged).run(charge_card, pivot=True, void=void_charge)
    tickets = charged.to(ticketed).run(issue_tickets)


EVERYTHING = ["car", "extras", "flight", "hotel"]
"""What a completed trip holds, sorted."""
