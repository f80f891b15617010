"""The testing kit attacks the trip booking: refused deliveries, lost charges, voids.

Its domain invariant: a completed trip has its hotel and exactly one charge; a
compensated one has neither (a charge whose outcome was lost is voided)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings as Settings
from trip_sagas import (
    BookTrip,
    SupplierConfirmation,
    Travel,
    TripData,
    TripRequest,
    cancel_hotel,
    charge_card,
)

from statesaga import HistoryKind, Saga, State, Status, StepContext
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

TRIP = TripRequest("t-1", amount=1200, confirm_within=3600)
KEY = "trip:t-1"  # one booking per trip: a duplicate start is refused
PAYLOADS: dict[str, Any] = {
    "supplier_confirmed": lambda run: SupplierConfirmation(run.input.trip_id),
}


def money_follows_the_trip(outcome: Outcome) -> None:
    travel: Travel = outcome.world
    run = outcome.run
    if run.status is Status.COMPLETED:
        assert set(travel.hotels) == {"t-1"}, "a completed trip has its hotel"
        assert travel.charged() == 1200, f"a completed trip is charged once: {travel.charges}"
    else:
        assert set(travel.hotels) == set(), "a compensated trip keeps no hotel"
        assert travel.charged() == 0, f"a compensated trip keeps no money: {travel.charges}"


def attack(saga: type, **options: Any) -> None:
    assert_compensates(
        saga,
        input=TRIP,
        invariant=money_follows_the_trip,
        setup=Travel,
        resources=lambda world: [world],
        payloads=PAYLOADS,
        key=KEY,
        **options,
    )


def test_the_trip_keeps_its_promises_under_fault_plans() -> None:
    attack(BookTrip, settings=Settings(max_examples=25))


def test_plans_for_a_guarded_event_include_a_refused_delivery() -> None:
    from hypothesis import find

    # the search stops at the first such plan, and raises NoSuchExample if none comes in
    # 2,000 (a fixed sample of 60 plans missed it once in CI)
    plan = find(
        fault_plans(BookTrip.definition),
        lambda plan: any(e.mode == "refused" for e in plan.events),
        settings=Settings(max_examples=2000, database=None),
    )
    assert "refused" in {e.mode for e in plan.events}


def test_a_refused_delivery_leaves_the_run_waiting_on_its_timeout_then_it_completes() -> None:
    plan = FaultPlan(events=(EventPlan("supplier_confirmed", "refused"),))

    outcome = run_plan(
        BookTrip,
        plan,
        input=TRIP,
        setup=Travel,
        resources=lambda world: [world],
        payloads=PAYLOADS,
    )

    check_saga_invariants(outcome)  # the driver notes a wait its refusal restarted
    run = outcome.run
    assert run.status is Status.COMPLETED
    refused = [h for h in run.history if h.kind is HistoryKind.REJECTED]
    assert len(refused) == 1
    assert refused[0].error is not None
    assert refused[0].error.type == "GuardRefused"
    assert [e.result for e in outcome.journal if e.name == "confirm.guard"] == ["refused"]
    assert [e.status.value for e in run.inbox] == ["rejected", "accepted"]


def test_a_charge_lost_on_every_try_is_voided_under_the_kit() -> None:
    plan = FaultPlan(faults=(Fault("charge", "effect_then_raise", 3),))

    outcome = run_plan(
        BookTrip, plan, input=TRIP, setup=Travel, resources=lambda w: [w], payloads=PAYLOADS
    )

    check_saga_invariants(outcome)
    money_follows_the_trip(outcome)
    assert outcome.run.status is Status.COMPENSATED
    undone = [e.name for e in outcome.journal if e.name.endswith(".undo") and e.result == "ok"]
    assert undone == ["charge.undo", "book.undo"]


def forget_to_void(ctx: StepContext[TripRequest, TripData]) -> None:
    return None  # the bug: the charge the processor took stays taken


class LeakyTrip(BookTrip):
    name = "book-trip"
    version = 2
    charge = BookTrip.confirmed.to(BookTrip.charged).run(
        charge_card, pivot=True, void=forget_to_void
    )


def test_the_kit_finds_a_void_that_voids_nothing() -> None:
    with pytest.raises(InvariantViolation) as caught:
        attack(
            LeakyTrip,
            plans=fault_plans(LeakyTrip.definition, kinds=("effect_then_raise", "fatal")),
            # the search stops at the first failing plan, found after 3 to 109 plans in 15
            # searches; 200 missed it about once in 150 runs, 1,000 leaves no real chance
            settings=Settings(max_examples=1000),
        )

    assert "a compensated trip keeps no money" in str(caught.value)
    assert "charge: effect_then_raise" in str(caught.value)


def test_a_void_after_the_pivot_succeeded_breaks_an_invariant() -> None:
    # the invariant itself: fed a history where the pivot succeeded and was voided later
    class Always(Saga[TripRequest, TripData]):
        name = "always"
        new = State(initial=True)
        done = State(final=True)
        pay = new.to(done).run(charge_card, pivot=True, void=cancel_hotel)

    plan = FaultPlan()
    outcome = run_plan(
        Always, plan, input=TRIP, setup=Travel, resources=lambda w: [w], payloads=PAYLOADS
    )
    check_saga_invariants(outcome)
    import attrs

    from statesaga.run import HistoryEntry

    forged = attrs.evolve(
        outcome.run,
        status=Status.COMPENSATED,
        state="new",
        history=(
            *outcome.run.history,
            HistoryEntry(
                kind=HistoryKind.COMPENSATE,
                from_state="done",
                to_state="new",
                transition="pay",
                step="cancel_hotel",
                attempt=1,
                event=None,
                error=None,
                version=99,
                epoch=1,
                started_at=0.0,
                finished_at=0.0,
            ),
        ),
    )
    with pytest.raises(InvariantViolation, match="after a pivot completed"):
        check_saga_invariants(attrs.evolve(outcome, runs=(forged,)))
