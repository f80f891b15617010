"""The testing kit attacks the parallel trip: a failure (or a crash) in each branch.

Its domain invariant: a completed trip holds its budget, flight, hotel and confirmed
car; a compensated one holds nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as Settings
from parallel_trip import (
    BRANCH_STEPS,
    FAST,
    Agency,
    BookTripTogether,
    TripOrder,
    book_flight,
    book_hotel,
    cancel_hotel,
)

from statesaga import Branch, Status
from statesaga.testing import (
    Fault,
    FaultPlan,
    InvariantViolation,
    Outcome,
    assert_compensates,
    check_saga_invariants,
    fault_plans,
    run_plan,
)

TRIP = TripOrder("t-1")
EVERYTHING = {"budget", "flight", "hotel", "car", "car-confirmed"}


def bookings_follow_the_trip(outcome: Outcome) -> None:
    agency: Agency = outcome.world
    held = agency.holdings("t-1")
    if outcome.run.status is Status.COMPLETED:
        wanted = EVERYTHING if outcome.definition.version == 1 else {"budget", "flight", "hotel"}
        assert held == wanted, f"a completed trip holds every booking: {held}"
    else:
        assert held == set(), f"a compensated trip holds nothing: {held}"


def attack(saga: type, **options: Any) -> None:
    assert_compensates(
        saga,
        input=TRIP,
        invariant=bookings_follow_the_trip,
        setup=Agency,
        resources=lambda world: [world],
        key="trip:t-1",
        **options,
    )


def test_plans_name_every_branch_step_and_its_undo() -> None:
    named: set[str] = set()

    @Settings(max_examples=200, database=None)
    def collect(plan: FaultPlan) -> None:
        named.update(f.target for f in plan.faults)

    given(fault_plans(BookTripTogether.definition))(collect)()
    assert set(BRANCH_STEPS) <= named
    assert {f"{s}.undo" for s in BRANCH_STEPS} & named


@pytest.mark.parametrize("step", BRANCH_STEPS)
@pytest.mark.parametrize("kind", ["fatal", "crash_before", "crash_after", "crash_after_commit"])
def test_a_failure_in_each_branch_keeps_the_promises(step: str, kind: str) -> None:
    outcome = run_plan(
        BookTripTogether,
        FaultPlan(faults=(Fault(step, kind),)),  # type: ignore[arg-type]
        input=TRIP,
        setup=Agency,
        resources=lambda world: [world],
    )

    check_saga_invariants(outcome)
    bookings_follow_the_trip(outcome)
    expected = Status.COMPENSATED if kind == "fatal" else Status.COMPLETED
    assert outcome.run.status is expected


def test_the_parallel_trip_keeps_its_promises_under_fault_plans() -> None:
    attack(BookTripTogether, settings=Settings(max_examples=25))


def forget_the_flight(ctx: Any) -> None:
    return None  # the bug: the flight stays booked


class LeakyTrip(BookTripTogether):
    name = "book-trip-together"
    version = 2
    book = BookTripTogether.budgeted.to(BookTripTogether.booked).parallel(
        flight=Branch(book_flight, undo=forget_the_flight, retry=FAST, writes="flight"),
        hotel=Branch(book_hotel, undo=cancel_hotel, undo_on_failure=True, writes="hotel"),
    )


def test_the_kit_finds_a_branch_whose_undo_undoes_nothing() -> None:
    with pytest.raises(InvariantViolation) as caught:
        attack(LeakyTrip, settings=Settings(max_examples=200))

    assert "a compensated trip holds nothing" in str(caught.value)
