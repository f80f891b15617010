"""A pivot's void: run only when the pivot fails for good, never after it succeeded, then
the steps before the pivot are compensated. Through the public API, on SQLite and
PostgreSQL, with the sync and the async engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from trip_sagas import (
    BookTrip,
    Clock,
    Engines,
    LostAnswer,
    SupplierConfirmation,
    Travel,
    TripData,
    TripRequest,
    book_hotel,
    cancel_hotel,
    charge_card,
    issue_tickets,
    void_charge,
)

from statesaga import (
    DefinitionError,
    HistoryKind,
    NonRetryableError,
    Run,
    Saga,
    State,
    Status,
)


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


def drive_to_the_end(engines: Engines, clock: Clock, run_id: str) -> Run[Any, Any, Any]:
    """Let time pass (retries' backoffs) and recover until the run is terminal."""
    for _ in range(20):
        run = engines.get(run_id)
        if run.status.is_terminal:
            return run
        clock.advance(120)
        engines.recover()
    raise AssertionError(f"run {run_id} did not end: {engines.get(run_id)}")


def confirmed_run(engines: Engines, trip: str = "t-1") -> Run[Any, Any, Any]:
    run = engines.start(BookTrip, TripRequest(trip))
    assert run.status is Status.WAITING
    delivery = engines.send(
        BookTrip.supplier_confirmed, SupplierConfirmation(trip), instance_id=run.id
    )
    return delivery.run


def kinds(run: Run[Any, Any, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(h.kind.value, h.transition, h.step) for h in run.history]


def test_a_charge_whose_answer_is_lost_on_every_try_is_voided_then_the_hotel_cancelled(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    # the processor took the money each time, but no answer came back
    travel.charge_failures = [
        LostAnswer("no answer"),
        LostAnswer("no answer"),
        LostAnswer("no answer"),
    ]

    run = drive_to_the_end(engines, clock, confirmed_run(engines).id)

    assert run.status is Status.COMPENSATED
    assert travel.charged() == 0, travel.charges  # every charge it may have taken is voided
    assert set(travel.hotels) == set()
    assert travel.calls[-2:] == ["void_charge", "cancel_hotel"]  # the void first, then the rest
    undone = [(t, step) for kind, t, step in kinds(run) if kind == HistoryKind.COMPENSATE.value]
    assert undone == [("charge", "void_charge"), ("book", "cancel_hotel")]
    assert run.error is not None
    assert run.error.type.endswith("LostAnswer")


def test_the_void_runs_under_the_pivots_idempotency_key(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    travel.charge_failures = [LostAnswer("no answer")] * 3

    run = drive_to_the_end(engines, clock, confirmed_run(engines).id)

    # the three tries shared one key, so the processor deduplicated them to one charge
    # (a dict keyed by it here), and the void found it under the same key
    assert len(travel.voided) == 1
    assert run.status is Status.COMPENSATED


def test_a_pivot_that_fails_for_good_at_once_is_voided_too(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    # a non-retryable error: the void must tolerate a charge that never got through
    travel.charge_takes_effect = False
    travel.charge_failures = [NonRetryableError("card declined")]

    run = drive_to_the_end(engines, clock, confirmed_run(engines).id)

    assert run.status is Status.COMPENSATED
    assert travel.calls[-2:] == ["void_charge", "cancel_hotel"]
    assert travel.voided == []
    assert travel.charged() == 0


def test_the_void_never_runs_after_the_pivot_succeeded(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    # past the pivot, a step that fails for good leaves the run failed, money kept
    travel.ticket_failures = [NonRetryableError("no seats")]

    run = drive_to_the_end(engines, clock, confirmed_run(engines).id)

    assert run.status is Status.FAILED
    assert "void_charge" not in travel.calls
    assert travel.charged() == 1200
    assert HistoryKind.COMPENSATE.value not in [kind for kind, _, _ in kinds(run)]


def test_a_void_that_keeps_failing_leaves_the_run_failed_and_a_retry_finishes_it(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    travel.charge_failures = [NonRetryableError("declined")]
    travel.void_failures = 100

    run = drive_to_the_end(engines, clock, confirmed_run(engines).id)
    assert run.status is Status.FAILED
    assert run.error is not None
    assert run.error.step == "charge.undo"
    assert set(travel.hotels) == {"t-1"}  # nothing before the pivot is undone before its void

    travel.void_failures = 0
    engines.retry(run.id)
    run = drive_to_the_end(engines, clock, run.id)
    assert run.status is Status.COMPENSATED
    assert travel.charged() == 0
    assert set(travel.hotels) == set()


def test_the_deadline_does_not_cut_a_pivot_short_but_its_void_still_runs(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    # the deadline passes while the charge is retried: the pivot binds, so nothing is
    # compensated until its retries are spent; then the void runs before the rest
    travel.charge_failures = [LostAnswer("no answer")] * 3
    run = engines.start(BookTrip, TripRequest("t-2", book_within=60))
    delivery = engines.send(
        BookTrip.supplier_confirmed, SupplierConfirmation("t-2"), instance_id=run.id
    )
    assert delivery.run.status is Status.RUNNING

    run = drive_to_the_end(engines, clock, run.id)

    assert run.status is Status.COMPENSATED
    assert travel.calls.count("charge_card") == 3
    assert travel.calls[-2:] == ["void_charge", "cancel_hotel"]


# -- definition-time checks -----------------------------------------------------------------------


def rejected(declare: Callable[[], object]) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        declare()
    return caught.value


def test_a_void_on_a_step_that_is_not_a_pivot_names_the_fix() -> None:
    def declare() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            booked = State()
            done = State(final=True)
            book = new.to(booked).run(book_hotel, void=cancel_hotel)
            pay = booked.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert error.transition == "book"
    assert "add pivot=True" in str(error)
    assert "undo_on_failure=True" in str(error)


def test_a_void_on_a_pivot_after_another_pivot_is_refused() -> None:
    def declare() -> None:
        class Trip(Saga[TripRequest, TripData]):
            name = "trip"
            new = State(initial=True)
            charged = State()
            done = State(final=True)
            pay = new.to(charged).run(charge_card, pivot=True)
            ticket = charged.to(done).run(issue_tickets, pivot=True, void=void_charge)

    error = rejected(declare)
    assert error.transition == "ticket"
    assert "remove void=..." in str(error)


def test_a_void_with_the_wrong_signature_or_types_is_refused() -> None:
    def two_arguments(ctx: Any, more: Any) -> None:
        return None

    def wrong_types(ctx: Any) -> str:
        return "voided"

    for void, fix in ((two_arguments, "make it accept exactly that"), (wrong_types, "or None")):

        def declare(void: Any = void) -> None:
            class Trip(Saga[TripRequest, TripData]):
                name = "trip"
                new = State(initial=True)
                done = State(final=True)
                pay = new.to(done).run(charge_card, pivot=True, void=void)

        error = rejected(declare)
        assert "void of pivot 'pay'" in str(error)
        assert fix in str(error)


def test_a_void_changes_the_graph_hash_and_shows_in_the_definition() -> None:
    class Plain(Saga[TripRequest, TripData]):
        name = "trip"
        new = State(initial=True)
        done = State(final=True)
        pay = new.to(done).run(charge_card, pivot=True)

    class Voided(Saga[TripRequest, TripData]):
        name = "trip"
        new = State(initial=True)
        done = State(final=True)
        pay = new.to(done).run(charge_card, pivot=True, void=void_charge)

    step = Voided.definition.transitions["pay"].step
    assert step is not None
    assert step.void is void_charge
    assert step.rollback is void_charge
    assert step.compensation is None  # a pivot is never compensated after it succeeded
    assert Plain.definition.graph_hash != Voided.definition.graph_hash


def test_a_step_without_a_void_still_fails_the_run_when_its_outcome_stays_unknown(
    engines: Engines, clock: Clock, travel: Travel
) -> None:
    class NoVoid(Saga[TripRequest, TripData]):
        name = "no-void"
        new = State(initial=True)
        booked = State()
        done = State(final=True)
        book = new.to(booked).run(book_hotel, undo=cancel_hotel)
        pay = booked.to(done).run(charge_card, pivot=True)

    travel.charge_failures = [LostAnswer("no answer")] * 3
    run = drive_to_the_end(engines, clock, engines.start(NoVoid, TripRequest("t-3")).id)

    assert run.status is Status.FAILED
    assert set(travel.hotels) == {"t-3"}
    assert travel.charged() == 1200
