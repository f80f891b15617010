"""Guarded events: an event transition may take a guard; an event its guards refuse is
recorded as rejected, with the reason, and the run keeps waiting on its original
timeout. Through the public API, on SQLite and PostgreSQL, with both engines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from trip_sagas import (
    BookTrip,
    Clock,
    Engines,
    SupplierConfirmation,
    Travel,
    TripData,
    TripRequest,
    book_hotel,
    cancel_hotel,
)

from statesaga import DefinitionError, Event, HistoryKind, Saga, State, Status, StepContext
from statesaga.delivery import DeliveryStatus


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def travel() -> Travel:
    return Travel()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engines(kind: str, db: str, clock: Clock, travel: Travel) -> Iterator[Engines]:
    engines = Engines(kind, db, clock, resources=[travel])
    yield engines
    engines.close()


def test_a_confirmation_for_another_trip_is_refused_and_the_wait_keeps_its_timeout(
    engines: Engines, clock: Clock
) -> None:
    run = engines.start(BookTrip, TripRequest("t-1", confirm_within=600))
    timeout_at = engines.due_at(run.id)
    assert timeout_at == clock() + 600
    clock.advance(400)

    wrong = engines.send(
        BookTrip.supplier_confirmed, SupplierConfirmation("t-9"), instance_id=run.id
    )

    assert wrong.status is DeliveryStatus.REJECTED
    assert wrong.reason is not None
    assert "refused by the guard of 'confirm' [for_this_trip]" in wrong.reason
    assert "in state 'awaiting_supplier'" in wrong.reason
    waiting = engines.get(run.id)
    assert (waiting.status, waiting.state) == (Status.WAITING, "awaiting_supplier")
    assert engines.due_at(run.id) == timeout_at  # not restarted: 200 s are left, not 600
    rejected = [h for h in waiting.history if h.kind is HistoryKind.REJECTED]
    assert [(h.event, h.from_state, h.to_state) for h in rejected] == [
        ("supplier_confirmed", "awaiting_supplier", "awaiting_supplier")
    ]
    assert rejected[0].error is not None
    assert rejected[0].error.type == "GuardRefused"
    assert rejected[0].error.message == wrong.reason
    (entry,) = waiting.inbox
    assert (entry.status, entry.reason) == (DeliveryStatus.REJECTED, wrong.reason)

    right = engines.send(
        BookTrip.supplier_confirmed, SupplierConfirmation("t-1"), instance_id=run.id
    )
    assert right.status is DeliveryStatus.ACCEPTED
    assert right.run.status is Status.COMPLETED


def test_after_a_refusal_the_original_timeout_still_ends_the_wait(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    run = engines.start(BookTrip, TripRequest("t-1", confirm_within=600))
    clock.advance(500)
    engines.send(BookTrip.supplier_confirmed, SupplierConfirmation("t-9"), instance_id=run.id)

    clock.advance(101)  # 601 s after the wait began, 101 s after the refused event
    engines.recover()

    run = engines.get(run.id)
    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.type == "WaitTimedOut"
    assert set(travel.hotels) == set()


@attrs.frozen
class Answer:
    rooms: int
    price: int = 100


def full(ctx: StepContext[TripRequest, TripData]) -> bool:
    return bool(ctx.event.rooms >= 2)


def partial(ctx: StepContext[TripRequest, TripData]) -> bool:
    return bool(ctx.event.rooms == 1)


async def affordable(ctx: StepContext[TripRequest, TripData]) -> bool:
    return bool(ctx.event.price <= ctx.input.amount)


def note(label: str) -> Callable[[StepContext[TripRequest, TripData]], TripData]:
    def step(ctx: StepContext[TripRequest, TripData]) -> TripData:
        return attrs.evolve(ctx.data, hotel_ref=label)

    step.__name__ = step.__qualname__ = f"note_{label}"
    return step


class Choosy(Saga[TripRequest, TripData]):
    """One event, several transitions: the first guard that passes wins, in order."""

    name = "choosy"
    answered = Event[Answer]()
    new = State(initial=True)
    waiting = State(timeout=3600)
    booked = State(final=True)
    split = State(final=True)
    haggle = State(final=True)

    book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
    take_all = waiting.to(booked).on(answered).when(full).run(note("full"), read_only=True)
    take_one = waiting.to(split).on(answered).when(partial).run(note("one"), read_only=True)
    counter = waiting.to(haggle).on(answered).unless(affordable)


@pytest.mark.parametrize(
    ("answer", "state", "status"),
    [
        (Answer(rooms=3), "booked", DeliveryStatus.ACCEPTED),
        (Answer(rooms=1), "split", DeliveryStatus.ACCEPTED),
        (Answer(rooms=0, price=5000), "haggle", DeliveryStatus.ACCEPTED),
        (Answer(rooms=0, price=10), "waiting", DeliveryStatus.REJECTED),
    ],
)
def test_the_first_guard_that_passes_takes_the_event_in_declaration_order(
    engines: Engines, answer: Answer, state: str, status: DeliveryStatus
) -> None:
    run = engines.start(Choosy, TripRequest("t-1"))

    delivery = engines.send(Choosy.answered, answer, instance_id=run.id)

    assert delivery.status is status
    assert engines.get(run.id).state == state
    if status is DeliveryStatus.REJECTED:
        assert delivery.reason is not None
        assert "'take_all' [full], 'take_one' [partial], 'counter' [not affordable]" in (
            delivery.reason
        )


def test_an_unguarded_transition_takes_what_the_guards_refuse() -> None:
    class Fallback(Saga[TripRequest, TripData]):
        name = "fallback"
        answered = Event[Answer]()
        new = State(initial=True)
        waiting = State()
        booked = State(final=True)
        review = State(final=True)
        book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
        anything = waiting.to(review).on(answered)  # declared first, tried last
        take_all = waiting.to(booked).on(answered).when(full)

    choices = Fallback.definition.event_choices["waiting"]["answered"]
    assert [t.name for t in choices] == ["take_all", "anything"]
    with Engines("sync", "sqlite://", Clock(), [Travel()], sagas=[Fallback]) as engines:
        run = engines.start(Fallback, TripRequest("t-1"))
        delivery = engines.send(Fallback.answered, Answer(rooms=1), instance_id=run.id)
        assert delivery.status is DeliveryStatus.ACCEPTED
        assert delivery.run.state == "review"


def test_a_guard_that_raises_refuses_the_event_with_its_error_and_the_run_waits(
    engines: Engines,
) -> None:
    def broken(ctx: StepContext[TripRequest, TripData]) -> bool:
        raise KeyError("rooms")

    class Broken(Saga[TripRequest, TripData]):
        name = "broken-guard"
        answered = Event[Answer]()
        new = State(initial=True)
        waiting = State()
        booked = State(final=True)
        book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
        take = waiting.to(booked).on(answered).when(broken)

    run = engines.start(Broken, TripRequest("t-1"))
    delivery = engines.send(Broken.answered, Answer(rooms=1), instance_id=run.id)

    assert delivery.status is DeliveryStatus.REJECTED
    assert delivery.reason == "the guard of transition 'take' raised KeyError: 'rooms'"
    assert engines.get(run.id).status is Status.WAITING


def test_an_event_sent_while_the_run_is_busy_is_judged_once_it_waits(
    engines: Engines, db: str, travel: Travel
) -> None:
    # the confirmation arrives while the hotel is being booked: the inbox keeps it, and
    # the guard judges it when the run reaches the wait (before it lets the run go)
    sent: list[Any] = []

    def book_and_hear(ctx: StepContext[TripRequest, TripData]) -> TripData:
        if not sent:
            with Engines("sync", db, Clock(), [travel], sagas=[Busy]) as other:
                confirmation = SupplierConfirmation(ctx.input.trip_id)
                sent.append(
                    other.send("supplier_confirmed", confirmation, instance_id=ctx.instance_id)
                )
        return book_hotel(ctx)

    class Busy(BookTrip):
        name = "book-trip"
        version = 2
        book = BookTrip.new.to(BookTrip.awaiting_supplier).run(book_and_hear, undo=cancel_hotel)

    run = engines.start(Busy, TripRequest("t-1"))

    assert sent
    assert sent[0].status is DeliveryStatus.PENDING
    assert engines.get(run.id).status is Status.COMPLETED
    assert [e.status for e in engines.get(run.id).inbox] == [DeliveryStatus.ACCEPTED]


# -- definition-time checks -----------------------------------------------------------------------


def rejected(declare: Callable[[], object]) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        declare()
    return caught.value


def test_two_unguarded_transitions_for_one_event_name_the_fix() -> None:
    def declare() -> None:
        class Twice(Saga[TripRequest, TripData]):
            name = "twice"
            new = State(initial=True)
            waiting = State()
            a = State(final=True)
            b = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            first = waiting.to(a).on("answered")
            second = waiting.to(b).on("answered")

    error = rejected(declare)
    assert (error.state, error.transition) == ("waiting", "second")
    assert "guard all but one with .when(...)" in str(error)


def test_transitions_sharing_an_event_must_share_its_payload_type() -> None:
    def declare() -> None:
        class Mixed(Saga[TripRequest, TripData]):
            name = "mixed"
            new = State(initial=True)
            waiting = State()
            a = State(final=True)
            b = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            first = waiting.to(a).on("answered", payload=Answer).when(full)
            second = waiting.to(b).on("answered", payload=SupplierConfirmation)

    error = rejected(declare)
    assert error.transition == "second"
    assert "declare one payload type for the event" in str(error)


def test_an_event_guard_with_the_wrong_signature_is_refused() -> None:
    def declare() -> None:
        class Bad(Saga[TripRequest, TripData]):
            name = "bad"
            new = State(initial=True)
            waiting = State()
            done = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            take = waiting.to(done).on("answered").when(lambda: True)

    error = rejected(declare)
    assert error.transition == "take"
    assert "guard of transition 'take'" in str(error)
