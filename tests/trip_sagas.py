"""The trip booking of issue 17, for the tests of per-run timeouts, guarded events and
a pivot's void: a hotel booked, a supplier's confirmation awaited for as long as the
trip allows (a guard refuses a confirmation for another trip), the card charged as
the pivot (voided if its outcome is lost), tickets issued.

``Engines`` puts ``Engine`` and ``AsyncEngine`` behind one synchronous face, so one
test body checks both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import attrs

from statesaga import AsyncEngine, Engine, Event, Run, Saga, State, StepContext
from statesaga.delivery import Delivery

# -- the domain ----------------------------------------------------------------------------------


@attrs.frozen
class TripRequest:
    trip_id: str
    amount: int = 1200
    confirm_within: float | None = 3600.0
    """the supplier's confirmation window, seconds (``None``: no window)"""
    book_within: float | None = None
    """how long the whole booking may take, seconds (``None``: the saga's default)"""


@attrs.frozen
class TripData:
    hotel_ref: str | None = None
    charge_id: str | None = None
    ticketed: bool = False


@attrs.frozen
class SupplierConfirmation:
    trip_id: str
    rooms: int = 1


class Travel:
    """The outside world: a hotel, a card processor and a ticket office, with failures."""

    def __init__(self) -> None:
        self.hotels: dict[str, str] = {}  # trip -> the booking's idempotency key
        self.charges: dict[str, int] = {}  # idempotency key -> amount taken
        self.voided: list[str] = []
        # like real providers, a key once cancelled or voided is never honoured again: a
        # paused holder's late call under it is refused, not booked behind the saga's back
        self.spent_keys: set[str] = set()
        self.calls: list[str] = []
        self.charge_failures: list[BaseException] = []  # raised by the next charges
        self.charge_takes_effect = True  # a failing charge took the money first
        self.void_failures = 0
        self.ticket_failures: list[BaseException] = []

    def charged(self) -> int:
        return sum(self.charges.values())


class LostAnswer(Exception):
    """The card processor's answer was lost: the charge may have been taken."""


Ctx = StepContext[TripRequest, TripData]


def book_hotel(ctx: Ctx) -> TripData:
    travel = ctx.resource(Travel)
    travel.calls.append("book_hotel")
    if ctx.idempotency_key not in travel.spent_keys:
        travel.hotels[ctx.input.trip_id] = ctx.idempotency_key
    return attrs.evolve(ctx.data, hotel_ref=f"h-{ctx.input.trip_id}")


def cancel_hotel(ctx: Ctx) -> None:
    travel = ctx.resource(Travel)
    travel.calls.append("cancel_hotel")
    key = ctx.idempotency_key.removesuffix(":undo")
    travel.spent_keys.add(key)
    if travel.hotels.get(ctx.input.trip_id) == key:
        del travel.hotels[ctx.input.trip_id]


def confirmation_window(ctx: Ctx) -> timedelta | None:
    window = ctx.input.confirm_within
    return None if window is None else timedelta(seconds=window)


def for_this_trip(ctx: StepContext[TripRequest, TripData]) -> bool:
    return bool(ctx.event.trip_id == ctx.input.trip_id)


def charge_card(ctx: Ctx) -> TripData:
    travel = ctx.resource(Travel)
    travel.calls.append("charge_card")
    honoured = ctx.idempotency_key not in travel.spent_keys
    if travel.charge_failures:
        error = travel.charge_failures.pop(0)
        if travel.charge_takes_effect and honoured:
            travel.charges[ctx.idempotency_key] = ctx.input.amount
        raise error
    if honoured:
        travel.charges[ctx.idempotency_key] = ctx.input.amount
    return attrs.evolve(ctx.data, charge_id=ctx.idempotency_key)


def void_charge(ctx: Ctx) -> None:
    """Void whatever the charge under this key took (nothing, if it never got through)."""
    travel = ctx.resource(Travel)
    travel.calls.append("void_charge")
    if travel.void_failures:
        travel.void_failures -= 1
        raise LostAnswer("the processor did not answer the void")
    key = ctx.idempotency_key.removesuffix(":undo")
    travel.spent_keys.add(key)
    if travel.charges.pop(key, None) is not None:
        travel.voided.append(key)


def issue_tickets(ctx: Ctx) -> TripData:
    travel = ctx.resource(Travel)
    travel.calls.append("issue_tickets")
    if travel.ticket_failures:
        raise travel.ticket_failures.pop(0)
    return attrs.evolve(ctx.data, ticketed=True)


class BookTrip(Saga[TripRequest, TripData]):
    """Book a trip: the hotel, the supplier's confirmation, the charge, the tickets."""

    name = "book-trip"
    supplier_confirmed = Event[SupplierConfirmation]()

    new = State(initial=True)
    awaiting_supplier = State(timeout=confirmation_window)
    confirmed = State()
    charged = State()
    ticketed = State(final=True)

    book = new.to(awaiting_supplier).run(book_hotel, undo=cancel_hotel, undo_on_failure=True)
    confirm = awaiting_supplier.to(confirmed).on(supplier_confirmed).when(for_this_trip)
    charge = confirmed.to(charged).run(charge_card, pivot=True, void=void_charge)
    tickets = charged.to(ticketed).run(issue_tickets)

    @staticmethod
    def deadline(trip: TripRequest) -> timedelta | None:
        return None if trip.book_within is None else timedelta(seconds=trip.book_within)


# -- both engines behind one face ------------------------------------------------------------------


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Engines:
    """An ``Engine`` or an ``AsyncEngine`` (``kind``), called the same way."""

    def __init__(
        self,
        kind: str,
        url: str,
        clock: Clock,
        resources: Iterable[object] = (),
        sagas: Iterable[type] = (BookTrip,),
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | AsyncEngine
        options: dict[str, Any] = {"clock": clock, "resources": resources, "sagas": list(sagas)}
        if kind == "sync":
            self.engine = Engine(url, max_inline_sleep=0.0, **options)
        else:
            self.loop = asyncio.new_event_loop()
            self.engine = AsyncEngine(url, max_inline_sleep=0.0, **options)

    def _done(self, value: Any) -> Any:
        return value if self.loop is None else self.loop.run_until_complete(value)

    def start(self, saga: type, saga_input: Any, **options: Any) -> Run[Any, Any, Any]:
        return self._done(self.engine.start(saga, saga_input, **options))  # type: ignore[no-any-return]

    def send(self, event: Any, payload: Any = None, **options: Any) -> Delivery:
        return self._done(self.engine.send(event, payload, **options))  # type: ignore[no-any-return]

    def recover(self) -> list[Run[Any, Any, Any]]:
        return self._done(self.engine.recover())  # type: ignore[no-any-return]

    def retry(self, instance_id: str) -> Run[Any, Any, Any]:
        return self._done(self.engine.retry(instance_id))  # type: ignore[no-any-return]

    def cancel(self, instance_id: str) -> Run[Any, Any, Any]:
        return self._done(self.engine.cancel(instance_id))  # type: ignore[no-any-return]

    def get(self, instance_id: str) -> Run[Any, Any, Any]:
        return self.engine.get(instance_id)

    def due_at(self, instance_id: str) -> float | None:
        row = self.engine.store.get(instance_id)
        assert row is not None
        return row.due_at

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()
        if self.loop is not None:
            self.loop.close()
