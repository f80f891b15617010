"""Per-run timeouts and deadlines: a waiting state's timeout, and a saga's deadline,
computed from the run when it enters the state (or starts) and persisted. Through the
public API, on SQLite and PostgreSQL, with the sync and the async engine."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
    charge_card,
)

from statesaga import DefinitionError, HistoryKind, InputError, Saga, State, Status, StepContext


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


def test_each_run_waits_as_long_as_its_own_trip_allows(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    short = engines.start(BookTrip, TripRequest("short", confirm_within=60))
    long = engines.start(BookTrip, TripRequest("long", confirm_within=600))
    assert short.status is long.status is Status.WAITING
    # measured as each run entered the state, and persisted as its wait's timeout
    assert engines.due_at(short.id) == clock() + 60
    assert engines.due_at(long.id) == clock() + 600
    wait = [h for h in engines.get(short.id).history if h.kind is HistoryKind.WAIT]
    assert [(h.from_state, h.to_state) for h in wait] == [
        ("awaiting_supplier", "awaiting_supplier")
    ]

    clock.advance(61)
    engines.recover()

    assert engines.get(short.id).status is Status.COMPENSATED
    assert engines.get(short.id).error.type == "WaitTimedOut"  # type: ignore[union-attr]
    assert engines.get(long.id).status is Status.WAITING
    assert set(travel.hotels) == {"long"}


def test_a_window_of_none_waits_without_a_timeout(engines: Engines, clock: Clock) -> None:
    run = engines.start(BookTrip, TripRequest("open", confirm_within=None))

    assert run.status is Status.WAITING
    assert engines.due_at(run.id) is None
    clock.advance(10**6)
    engines.recover()
    assert engines.get(run.id).status is Status.WAITING


def test_the_measured_timeout_outlives_the_engine_that_measured_it(
    kind: str, db: str, clock: Clock, travel: Travel
) -> None:
    first = Engines(kind, db, clock, resources=[travel])
    try:
        run = first.start(BookTrip, TripRequest("t-1", confirm_within=90))
    finally:
        first.close()
    clock.advance(30)
    second = Engines(kind, db, clock, resources=[travel])
    try:
        # an event within the window is taken by another engine, judged by the stored timeout
        delivery = second.send(
            BookTrip.supplier_confirmed, SupplierConfirmation("t-1"), instance_id=run.id
        )
        assert delivery.run.status is Status.COMPLETED
    finally:
        second.close()


@pytest.mark.parametrize(
    ("returned", "error_type", "words"),
    [
        ("soon", "TypeError", "returned a str ('soon')"),
        (-5.0, "ValueError", "returned -5.0, not a finite duration >= 0"),
        (True, "TypeError", "returned a bool (True)"),
    ],
)
def test_a_timeout_function_answering_no_duration_stops_the_run_with_the_fix(
    engines: Engines, returned: Any, error_type: str, words: str
) -> None:
    class BadWindow(Saga[TripRequest, TripData]):
        name = "bad-window"
        new = State(initial=True)
        waiting = State(timeout=lambda ctx: returned)
        done = State(final=True)
        book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
        confirm = waiting.to(done).on("confirmed")

    run = engines.start(BadWindow, TripRequest("t-1"))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.type == error_type
    assert words in run.error.message
    assert "return seconds (>= 0), a timedelta, or None for no timeout" in run.error.message
    assert run.error.step == "waiting.timeout"


def test_a_timeout_function_that_raises_stops_the_run(engines: Engines) -> None:
    def window(ctx: StepContext[TripRequest, TripData]) -> float:
        raise LookupError("no window for this supplier")

    class Raising(Saga[TripRequest, TripData]):
        name = "raising-window"
        new = State(initial=True)
        waiting = State(timeout=window)
        done = State(final=True)
        book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
        confirm = waiting.to(done).on("confirmed")

    run = engines.start(Raising, TripRequest("t-1"))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.type == "LookupError"
    failure = [h for h in engines.get(run.id).history if h.kind is HistoryKind.FAILURE]
    assert failure
    assert failure[0].error is not None
    assert failure[0].error.message == "no window for this supplier"


def test_an_async_timeout_function_and_an_on_timeout_transition(
    engines: Engines, clock: Clock
) -> None:
    async def window(ctx: StepContext[TripRequest, TripData]) -> timedelta:
        return timedelta(minutes=ctx.input.amount // 100)

    class Escalate(Saga[TripRequest, TripData]):
        name = "escalate"
        new = State(initial=True)
        waiting = State(timeout=window)
        done = State(final=True)
        escalated = State(final=True)
        book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
        confirm = waiting.to(done).on("confirmed")
        escalate = waiting.to(escalated).on_timeout()

    run = engines.start(Escalate, TripRequest("t-1", amount=500))
    assert engines.due_at(run.id) == clock() + 300

    clock.advance(300)
    engines.recover()
    assert (engines.get(run.id).status, engines.get(run.id).state) == (
        Status.COMPLETED,
        "escalated",
    )


def test_the_deadline_comes_from_the_input_unless_start_gives_one(
    engines: Engines, clock: Clock
) -> None:
    timed = engines.start(BookTrip, TripRequest("t-1", book_within=120, confirm_within=None))
    untimed = engines.start(BookTrip, TripRequest("t-2", confirm_within=None))
    given = engines.start(
        BookTrip, TripRequest("t-3", book_within=120, confirm_within=None), deadline=30
    )

    store = engines.engine.store
    assert store.get(timed.id).deadline == clock() + 120  # type: ignore[union-attr]
    assert store.get(untimed.id).deadline is None  # type: ignore[union-attr]
    assert store.get(given.id).deadline == clock() + 30  # type: ignore[union-attr]

    clock.advance(121)
    engines.recover()
    assert engines.get(timed.id).status is Status.COMPENSATED
    assert engines.get(timed.id).error.type == "DeadlinePassed"  # type: ignore[union-attr]
    assert engines.get(untimed.id).status is Status.WAITING


def test_a_deadline_function_may_answer_a_datetime(engines: Engines, clock: Clock) -> None:
    class ByDate(Saga[TripRequest, TripData]):
        name = "by-date"
        new = State(initial=True)
        done = State(final=True)
        pay = new.to(done).run(charge_card, pivot=True)

        @staticmethod
        def deadline(trip: TripRequest) -> datetime:
            return datetime(2030, 1, 1, tzinfo=UTC)

    run = engines.start(ByDate, TripRequest("t-1"))
    row = engines.engine.store.get(run.id)
    assert row is not None
    assert row.deadline == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("compute", "words"),
    [
        (lambda trip: 1 / 0, "deadline(input) of saga 'bad-deadline' rejected the input"),
        (lambda trip: "tomorrow", "returned 'tomorrow'; return seconds, a timedelta"),
        (lambda trip: -1, "must be positive"),
    ],
)
def test_a_deadline_function_that_fails_starts_nothing(
    engines: Engines, compute: Callable[[Any], Any], words: str
) -> None:
    class BadDeadline(Saga[TripRequest, TripData]):
        name = "bad-deadline"
        new = State(initial=True)
        done = State(final=True)
        pay = new.to(done).run(charge_card, pivot=True)
        deadline = staticmethod(compute)

    before = engines.engine.store.dump()
    with pytest.raises(InputError, match=re.escape(words)):
        engines.start(BadDeadline, TripRequest("t-1"))
    assert engines.engine.store.dump() == before


# -- definition-time checks -----------------------------------------------------------------------


def rejected(declare: Callable[[], object]) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        declare()
    return caught.value


def test_a_timeout_function_with_the_wrong_signature_names_the_state_and_the_fix() -> None:
    def declare() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            waiting = State(timeout=lambda: 60)
            done = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            confirm = waiting.to(done).on("confirmed")

    error = rejected(declare)
    assert error.state == "waiting"
    assert "timeout of state 'waiting'" in str(error)
    assert "but is called with (ctx); make it accept exactly that" in str(error)


def test_a_timeout_function_annotated_to_return_no_duration_is_refused() -> None:
    def window(ctx: StepContext[TripRequest, TripData]) -> str:
        return "an hour"

    def declare() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            waiting = State(timeout=window)
            done = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            confirm = waiting.to(done).on("confirmed")

    error = rejected(declare)
    assert error.state == "waiting"
    assert "returns str, but a timeout is a duration" in str(error)
    assert "return seconds (a float), a timedelta, or None" in str(error)


def test_a_computed_timeout_needs_an_event_out_of_its_state() -> None:
    def declare() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            waiting = State(timeout=lambda ctx: 60)
            done = State(final=True)
            book = new.to(waiting).run(book_hotel, undo=cancel_hotel)
            go = waiting.to(done).when(lambda ctx: True)

    error = rejected(declare)
    assert error.state == "waiting"
    assert "add a transition with .on('event') from it" in str(error)


def test_a_deadline_method_must_be_a_plain_static_method() -> None:
    def not_static() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            done = State(final=True)
            pay = new.to(done).run(charge_card, pivot=True)

            def deadline(self, trip: TripRequest) -> float:  # type: ignore[override]
                return 60.0

    def asynchronous() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            done = State(final=True)
            pay = new.to(done).run(charge_card, pivot=True)

            @staticmethod
            async def deadline(trip: TripRequest) -> float:  # type: ignore[override]
                return 60.0

    assert "make it a @staticmethod deadline(input)" in str(rejected(not_static))
    assert "deadline(input) is async" in str(rejected(asynchronous))


def test_a_computed_timeout_shows_in_the_definition_and_its_graph_hash() -> None:
    state = BookTrip.definition.states["awaiting_supplier"]
    assert state.timeout is None
    assert state.timed
    assert state.timeout_name == "confirmation_window"
    assert BookTrip.definition.deadline_of is not None

    class Fixed(BookTrip):
        name = "book-trip"
        awaiting_supplier = State(timeout=3600)
        book = BookTrip.new.to(awaiting_supplier).run(book_hotel, undo=cancel_hotel)
        confirm = awaiting_supplier.to(BookTrip.confirmed).on(BookTrip.supplier_confirmed)

    assert Fixed.definition.graph_hash != BookTrip.definition.graph_hash
