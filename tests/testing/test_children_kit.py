"""The testing kit attacks a saga with a child saga: faults in the child's steps (a
crash between starting the child and the parent recording it), the child's event
delivered as plans say, and the invariants extended to children.

Its domain invariant: a completed holiday has its hotel, its car and its charge; a
compensated one has none of them (its package was compensated with it)."""

from __future__ import annotations

import pytest
from child_sagas import BookHoliday, CarConfirmed, HolidayRequest, Holidays
from hypothesis import given
from hypothesis import settings as Settings

from statesaga import Status
from statesaga.testing import (
    EventPlan,
    Fault,
    FaultPlan,
    InvariantViolation,
    Outcome,
    assert_compensates,
    check_saga_invariants,
    fault_plans,
    run_plan,
)

HOLIDAY = HolidayRequest("t-1", car_needs_confirmation=True)
PAYLOADS = {"car_confirmation": CarConfirmed("car-1")}


def everything_or_nothing(outcome: Outcome) -> None:
    world: Holidays = outcome.world
    if outcome.run.status is Status.COMPLETED:
        assert world.booked() == (1, 1), f"a completed holiday has its package: {world.calls}"
        assert world.charges == {"t-1"}, "a completed holiday is charged"
    else:
        assert world.booked() == (0, 0), f"a compensated holiday keeps nothing: {world.calls}"
        assert world.charges == set(), "a compensated holiday keeps no money"


def test_a_crash_between_starting_the_child_and_recording_it_leaves_one_child() -> None:
    plan = FaultPlan((Fault("book-package/reserve_hotel", "crash_before"),))
    outcome = run_plan(
        BookHoliday,
        plan,
        input=HolidayRequest("t-1"),
        setup=Holidays,
        resources=lambda world: [world],
    )
    check_saga_invariants(outcome)
    everything_or_nothing(outcome)
    parent, *children = outcome.runs
    assert parent.status is Status.COMPLETED
    assert [(c.saga, c.parent_id, c.status) for c in children] == [
        ("book-package", parent.id, Status.COMPLETED)
    ]
    crashed = [e for e in outcome.journal if e.result == "crash_before"]
    assert [e.name for e in crashed] == ["book-package/reserve_hotel"]


def test_plans_reach_into_the_child_saga() -> None:
    names: set[str] = set()

    @Settings(max_examples=80, database=None)
    def collect(plan: FaultPlan) -> None:
        names.update(f.target for f in plan.faults)
        names.update(e.event for e in plan.events)

    given(fault_plans(BookHoliday.definition))(collect)()
    assert "book-package/rent_confirmed" in names
    assert "car_confirmation" in names
    assert "book_package.undo" not in names  # the runtime's, not the saga's


def test_the_holiday_keeps_its_promises_under_fault_plans() -> None:
    assert_compensates(
        BookHoliday,
        input=HOLIDAY,
        key=f"trip:{HOLIDAY.trip_id}",  # one holiday per trip: a duplicate start is refused
        invariant=everything_or_nothing,
        setup=Holidays,
        resources=lambda world: [world],
        payloads=PAYLOADS,
        settings=Settings(max_examples=25),
    )


def test_a_car_booked_late_by_a_holder_that_lost_the_child_is_refused_by_its_key() -> None:
    """Found by a 2,000-plan sweep: the child's holder pauses past its lease before renting
    the car; the engine that takes the child over finds the rental failing, cancels it
    (its effect may be unknown) and compensates the holiday; then the paused holder
    rents the car after all. No engine can stop a call already under way when its holder
    paused: the rental company must refuse a booking under a key it has cancelled, as the
    world here now does (docs/runtime.md, "Fencing"), and the car is never held."""
    plan = FaultPlan(
        (
            Fault("book-package/rent_confirmed", "retryable"),
            Fault("book-package/rent_confirmed", "lease_loss"),
        ),
        events=(EventPlan("car_confirmation", "on_time"),),
    )
    outcome = run_plan(
        BookHoliday,
        plan,
        input=HOLIDAY,
        setup=Holidays,
        resources=lambda world: [world],
        payloads=PAYLOADS,
    )

    check_saga_invariants(outcome)
    everything_or_nothing(outcome)
    assert outcome.run.status is Status.COMPENSATED
    late = [e for e in outcome.journal if e.name == "book-package/rent_confirmed" and e.ran]
    assert [e.result for e in late] == ["ok"]  # the late call did come, and was refused
    calls = outcome.world.calls
    booked_last = max(i for i, call in enumerate(calls) if call == "book_car")
    assert calls.index("cancel_car") < booked_last  # it came after the cancel


def test_a_parent_completed_without_its_child_is_reported() -> None:
    outcome = run_plan(
        BookHoliday,
        FaultPlan(()),
        input=HolidayRequest("t-1"),
        setup=Holidays,
        resources=lambda world: [world],
    )
    parent, child = outcome.runs
    broken = Outcome(
        outcome.definition,
        outcome.plan,
        (parent, type(child)(**{**vars_of(child), "status": Status.COMPENSATED})),
        outcome.journal,
        outcome.world,
        outcome.notes,
        outcome.sent,
    )
    with pytest.raises(InvariantViolation, match="but its parent completed"):
        check_saga_invariants(broken)


def vars_of(run: object) -> dict[str, object]:
    import attrs

    return attrs.asdict(run, recurse=False)
