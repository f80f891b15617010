"""The trip booking of issue 17 with its bookings made at once: the budget held, then the
flight, the hotel and the car (reserved, then confirmed) booked in parallel branches,
then the itinerary issued. For the tests of parallel branches.

``Agency`` is the outside world, with knobs the tests turn: failures per step, a
barrier the first steps of the branches must all reach (so they provably run at
once), and gates that hold a step until another has run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from statesaga import Branch, NonRetryableError, Retry, Saga, State, StepContext


@attrs.frozen
class TripOrder:
    trip_id: str


@attrs.frozen
class TripPlan:
    budget_held: bool = False
    flight: str | None = None
    hotel: str | None = None
    car: str | None = None
    car_confirmed: bool = False
    itinerary: bool = False


class SoldOut(NonRetryableError):
    """A supplier has nothing left: retrying cannot help."""


class Crash(BaseException):
    """The process dies here (as the testing kit's crash faults do)."""


class Agency:
    """The suppliers: what is booked (by trip), every call, and the tests' knobs."""

    def __init__(self) -> None:
        self.booked: dict[str, set[str]] = {}  # trip -> what is booked for it
        # keys cancelled: as a real supplier does, a late call under one (a paused holder's,
        # after the run was compensated) is refused, not booked behind the saga's back
        self.spent: set[str] = set()
        self.calls: list[str] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.barrier: threading.Barrier | None = None
        self.gates: dict[str, threading.Event] = {}  # step -> set when it ran
        self.waits: dict[str, str] = {}  # step -> the step it waits for first
        self.before: dict[str, Callable[[StepContext[TripOrder, TripPlan]], None]] = {}

    def gate(self, step: str) -> threading.Event:
        return self.gates.setdefault(step, threading.Event())

    def enter(self, ctx: StepContext[TripOrder, TripPlan], step: str, *, first: bool) -> None:
        self.calls.append(step)
        if first and self.barrier is not None:
            self.barrier.wait()
        if step in self.waits:
            assert self.gate(self.waits[step]).wait(10), f"{step} waited in vain"
        if step in self.before:
            self.before[step](ctx)
        failures = self.failures.get(step)
        if failures:
            raise failures.pop(0)

    def book(self, trip: str, what: str, key: str | None = None) -> None:
        if key is None or key not in self.spent:
            self.booked.setdefault(trip, set()).add(what)

    def cancel(self, trip: str, what: str, key: str | None = None) -> None:
        """Release ``what``; ``key``: the step's own key (its undo's, without ``:undo``)."""
        if key is not None:
            self.spent.add(key.removesuffix(":undo"))
        self.booked.get(trip, set()).discard(what)

    def holdings(self, trip: str) -> set[str]:
        return set(self.booked.get(trip, set()))


Ctx = StepContext[TripOrder, TripPlan]


def hold_budget(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "hold_budget", first=False)
    agency.book(ctx.input.trip_id, "budget", ctx.idempotency_key)
    return attrs.evolve(ctx.data, budget_held=True)


def release_budget(ctx: Ctx) -> None:
    agency = ctx.resource(Agency)
    agency.calls.append("release_budget")
    agency.cancel(ctx.input.trip_id, "budget", ctx.idempotency_key)


def book_flight(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "book_flight", first=True)
    agency.book(ctx.input.trip_id, "flight", ctx.idempotency_key)
    agency.gate("book_flight").set()
    return attrs.evolve(ctx.data, flight=f"F-{ctx.input.trip_id}")


def cancel_flight(ctx: Ctx) -> None:
    agency = ctx.resource(Agency)
    agency.calls.append("cancel_flight")
    agency.cancel(ctx.input.trip_id, "flight", ctx.idempotency_key)


def book_hotel(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "book_hotel", first=True)
    agency.book(ctx.input.trip_id, "hotel", ctx.idempotency_key)
    return attrs.evolve(ctx.data, hotel=f"H-{ctx.input.trip_id}")


def cancel_hotel(ctx: Ctx) -> None:
    """Cancel the hotel, booked or not (it runs too when the booking failed part-way)."""
    agency = ctx.resource(Agency)
    agency.calls.append("cancel_hotel")
    agency.cancel(ctx.input.trip_id, "hotel", ctx.idempotency_key)


def reserve_car(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "reserve_car", first=True)
    agency.book(ctx.input.trip_id, "car", ctx.idempotency_key)
    return attrs.evolve(ctx.data, car=f"C-{ctx.input.trip_id}")


def release_car(ctx: Ctx) -> None:
    agency = ctx.resource(Agency)
    agency.calls.append("release_car")
    agency.cancel(ctx.input.trip_id, "car", ctx.idempotency_key)


def confirm_car(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "confirm_car", first=False)
    agency.book(ctx.input.trip_id, "car-confirmed", ctx.idempotency_key)
    agency.gate("confirm_car").set()
    return attrs.evolve(ctx.data, car_confirmed=True)


def unconfirm_car(ctx: Ctx) -> None:
    agency = ctx.resource(Agency)
    agency.calls.append("unconfirm_car")
    agency.cancel(ctx.input.trip_id, "car-confirmed", ctx.idempotency_key)


def issue_itinerary(ctx: Ctx) -> TripPlan:
    agency = ctx.resource(Agency)
    agency.enter(ctx, "issue_itinerary", first=False)
    return attrs.evolve(ctx.data, itinerary=True)


FAST = Retry(attempts=3, initial_interval=0.01, jitter=0.0)


class BookTripTogether(Saga[TripOrder, TripPlan]):
    """Hold the budget, book flight, hotel and car at once, then issue the itinerary."""

    name = "book-trip-together"

    new = State(initial=True)
    budgeted = State()
    booked = State()
    done = State(final=True)

    # its hold may land and the call still fail: its release (a no-op for nothing held) too
    budget = new.to(budgeted).run(hold_budget, undo=release_budget, undo_on_failure=True)
    book = budgeted.to(booked).parallel(
        flight=Branch(
            book_flight, undo=cancel_flight, undo_on_failure=True, retry=FAST, writes="flight"
        ),
        hotel=Branch(
            book_hotel, undo=cancel_hotel, undo_on_failure=True, retry=FAST, writes="hotel"
        ),
        car=Branch(
            reserve_car,
            undo=release_car,
            undo_on_failure=True,
            retry=FAST,
            writes=("car", "car_confirmed"),
        ).then(confirm_car, undo=unconfirm_car, undo_on_failure=True, retry=FAST),
    )
    itinerary = booked.to(done).run(issue_itinerary, read_only=True)


BRANCH_STEPS = ("book.flight", "book.hotel", "book.car.1", "book.car.2")
