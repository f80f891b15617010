"""A saga inside a saga, for the tests of child sagas: a holiday books a package (a
child saga: a hotel, then a car whose rental may have to confirm it) and then
charges the card; a declined card compensates the package.

``Holidays`` is the outside world; the steps find it as a resource.
"""

from __future__ import annotations

import attrs

from statesaga import Event, Retry, Saga, State, StepContext


class Crash(BaseException):
    """A process killed mid-step: nothing after it is persisted."""


class Holidays:
    """Hotels, cars and cards, with what a test wants to go wrong."""

    def __init__(self) -> None:
        self.hotels: set[str] = set()
        self.cars: set[str] = set()
        self.charges: set[str] = set()
        self.calls: list[str] = []
        self.crash_on_car = 0  # how many car bookings crash the process first
        # as a provider that honours idempotency keys does: a key once cancelled is never
        # booked again (a holder paused past its lease may call late, after the cancel)
        self.spent_keys: set[str] = set()

    def booked(self) -> tuple[int, int]:
        return len(self.hotels), len(self.cars)


# -- the child: a package ----------------------------------------------------------------------


@attrs.frozen
class PackageRequest:
    trip_id: str
    car_fails: bool = False
    car_needs_confirmation: bool = False


@attrs.frozen
class PackageData:
    hotel: str | None = None
    car: str | None = None


@attrs.frozen
class Package:
    hotel: str
    car: str


@attrs.frozen
class CarConfirmed:
    reference: str


class CarUnavailable(Exception):
    """No car for these dates."""


PackageCtx = StepContext[PackageRequest, PackageData]


def book_hotel(ctx: PackageCtx) -> PackageData:
    world = ctx.resource(Holidays)
    world.calls.append("book_hotel")
    if ctx.idempotency_key not in world.spent_keys:
        world.hotels.add(ctx.input.trip_id)
    return attrs.evolve(ctx.data, hotel=f"h-{ctx.input.trip_id}")


def cancel_hotel(ctx: PackageCtx) -> None:
    world = ctx.resource(Holidays)
    world.calls.append("cancel_hotel")
    world.spent_keys.add(ctx.idempotency_key.removesuffix(":undo"))
    world.hotels.discard(ctx.input.trip_id)


def needs_confirmation(ctx: PackageCtx) -> bool:
    return ctx.input.car_needs_confirmation


def book_car(ctx: PackageCtx) -> PackageData:
    world = ctx.resource(Holidays)
    world.calls.append("book_car")
    if world.crash_on_car:
        world.crash_on_car -= 1
        raise Crash
    if ctx.input.car_fails:
        raise CarUnavailable(f"no car for {ctx.input.trip_id}")
    if ctx.idempotency_key not in world.spent_keys:
        world.cars.add(ctx.input.trip_id)
    car = ctx.data.car or f"c-{ctx.input.trip_id}"
    return attrs.evolve(ctx.data, car=car)


def cancel_car(ctx: PackageCtx) -> None:
    world = ctx.resource(Holidays)
    world.calls.append("cancel_car")
    world.spent_keys.add(ctx.idempotency_key.removesuffix(":undo"))
    world.cars.discard(ctx.input.trip_id)


def take_confirmation(ctx: PackageCtx) -> PackageData:
    confirmed = ctx.event
    assert isinstance(confirmed, CarConfirmed)
    return attrs.evolve(ctx.data, car=confirmed.reference)


class BookPackage(Saga[PackageRequest, PackageData, Package]):
    name = "book-package"

    new = State(initial=True)
    hotel_booked = State()
    awaiting_car = State()
    car_confirmed = State()
    booked = State(final=True)

    car_confirmation = Event[CarConfirmed]()

    # the hotel's answer may be lost after it booked: its cancel runs then too
    reserve_hotel = new.to(hotel_booked).run(book_hotel, undo=cancel_hotel, undo_on_failure=True)
    ask_rental = hotel_booked.to(awaiting_car).when(needs_confirmation)
    rent_car = hotel_booked.to(booked).run(
        book_car, undo=cancel_car, undo_on_failure=True, retry=Retry(attempts=1)
    )
    confirm = (
        awaiting_car.to(car_confirmed).on(car_confirmation).run(take_confirmation, read_only=True)
    )
    rent_confirmed = car_confirmed.to(booked).run(
        book_car, undo=cancel_car, undo_on_failure=True, retry=Retry(attempts=1)
    )

    @staticmethod
    def output(request: PackageRequest, data: PackageData) -> Package:
        return Package(hotel=data.hotel or "", car=data.car or "")


# -- the parent: a holiday ---------------------------------------------------------------------


@attrs.frozen
class HolidayRequest:
    trip_id: str
    card_declined: bool = False
    car_fails: bool = False
    car_needs_confirmation: bool = False


@attrs.frozen
class HolidayData:
    package: Package | None = None
    charged: bool = False


class CardDeclined(Exception):
    """The card was declined."""


HolidayCtx = StepContext[HolidayRequest, HolidayData]


def package_request(ctx: HolidayCtx) -> PackageRequest:
    return PackageRequest(ctx.input.trip_id, ctx.input.car_fails, ctx.input.car_needs_confirmation)


def take_package(ctx: HolidayCtx, package: Package) -> HolidayData:
    return attrs.evolve(ctx.data, package=package)


def charge_card(ctx: HolidayCtx) -> HolidayData:
    world = ctx.resource(Holidays)
    world.calls.append("charge_card")
    if ctx.input.card_declined:
        raise CardDeclined(f"card declined for {ctx.input.trip_id}")
    if ctx.idempotency_key not in world.spent_keys:
        world.charges.add(ctx.input.trip_id)
    return attrs.evolve(ctx.data, charged=True)


def refund_card(ctx: HolidayCtx) -> None:
    world = ctx.resource(Holidays)
    world.calls.append("refund_card")
    world.spent_keys.add(ctx.idempotency_key.removesuffix(":undo"))
    world.charges.discard(ctx.input.trip_id)


class BookHoliday(Saga[HolidayRequest, HolidayData]):
    name = "book-holiday"

    new = State(initial=True)
    packaged = State()
    paid = State(final=True)

    book_package = new.to(packaged).child(BookPackage, input=package_request, output=take_package)
    # a charge whose answer was lost may have taken the money: its refund runs then too
    charge = packaged.to(paid).run(
        charge_card, undo=refund_card, undo_on_failure=True, retry=Retry(attempts=1)
    )
