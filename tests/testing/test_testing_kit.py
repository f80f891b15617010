"""statesaga.testing: plans, the driver, the invariant checks, the state machine, the plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit_shop import Cart, Checkout, cart_key, fresh_shop, shop_invariant
from sagas import Confirmation, Linear, Order, Waiting

import statesaga.testing
from statesaga import Engine, HistoryKind, Status
from statesaga.run import HistoryEntry
from statesaga.testing import (
    EventPlan,
    FakeClock,
    Fault,
    FaultPlan,
    InvariantViolation,
    SagaStateMachine,
    check_saga_invariants,
    fault_plans,
    run_plan,
)

ROOT = Path(__file__).parents[2]


def test_the_kit_exports_exactly_these_names() -> None:
    assert sorted(statesaga.testing.__all__) == sorted(
        [
            "Crash",
            "EventPlan",
            "FakeClock",
            "Fault",
            "FaultPlan",
            "InjectedFailure",
            "InjectedFatalFailure",
            "InvariantViolation",
            "JournalEntry",
            "Outcome",
            "SagaStateMachine",
            "assert_compensates",
            "check_saga_invariants",
            "fault_plans",
            "run_plan",
        ]
    )


def test_importing_statesaga_does_not_import_hypothesis() -> None:
    code = "import sys, statesaga; assert 'hypothesis' not in sys.modules, 'hypothesis loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@given(fault_plans(Waiting.definition))
def test_plans_name_only_the_definitions_steps_and_events(plan: FaultPlan) -> None:
    steps = {"reserve", "confirm", "reserve.undo"}
    assert all(fault.target in steps for fault in plan.faults)
    undo_faults = [f for f in plan.faults if f.target.endswith(".undo")]
    assert all(f.kind not in ("lease_loss", "timeout", "duplicate_start") for f in undo_faults)
    assert [e.event for e in plan.events] == ["confirmed"]


def test_a_plan_reads_as_one_line() -> None:
    plan = FaultPlan(
        (Fault("charge", "crash_after"), Fault("reserve.undo", "retryable", 2)),
        (EventPlan("confirmed", "late"),),
        deadline=30,
    )
    assert str(plan) == (
        "charge: crash_after; reserve.undo: retryable x2; confirmed: late; deadline 30s"
    )


def test_a_crash_after_a_step_is_recovered_and_the_step_runs_again() -> None:
    outcome = run_plan(Linear, FaultPlan((Fault("charge", "crash_after"),)), input=Order("o-1"))

    check_saga_invariants(outcome)
    assert outcome.run.status is Status.COMPLETED
    charges = [e for e in outcome.journal if e.name == "charge"]
    assert [e.result for e in charges] == ["crash_after", "ok"]
    assert len({e.idempotency_key for e in charges}) == 1, "the same key after recovery"
    assert outcome.run.history[-1].epoch == 2, "recovered by a fresh engine"


def test_a_crash_right_after_a_commit_does_not_run_the_step_again() -> None:
    outcome = run_plan(
        Linear, FaultPlan((Fault("charge", "crash_after_commit"),)), input=Order("o-1")
    )

    check_saga_invariants(outcome)
    assert [e.name for e in outcome.journal] == ["reserve", "charge", "ship"]


def test_a_failing_step_compensates_in_reverse() -> None:
    outcome = run_plan(Linear, FaultPlan((Fault("ship", "fatal"),)), input=Order("o-1"))

    check_saga_invariants(outcome)
    assert outcome.run.status is Status.COMPENSATED
    undone = [e.name for e in outcome.journal if e.name.endswith(".undo")]
    assert undone == ["charge.undo", "reserve.undo"]


def test_a_lost_lease_lets_another_engine_finish_and_fences_the_paused_one() -> None:
    outcome = run_plan(
        Linear, FaultPlan((Fault("charge", "lease_loss"),)), input=Order("o-1"), key="order:o-1"
    )

    check_saga_invariants(outcome)
    assert outcome.run.status is Status.COMPLETED
    assert [e.name for e in outcome.journal if e.result == "ok"].count("charge") == 2


def test_a_duplicate_start_is_refused_while_the_key_is_held() -> None:
    outcome = run_plan(
        Linear, FaultPlan((Fault("charge", "duplicate_start"),)), input=Order("o-1"), key="k"
    )

    check_saga_invariants(outcome)
    assert len(outcome.runs) == 1
    assert any("refused: EntityBusy" in e.result for e in outcome.journal)


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        ("on_time", Status.COMPLETED),
        ("twice", Status.COMPLETED),
        ("late", Status.COMPENSATED),
        ("never", Status.COMPENSATED),
        ("early", Status.COMPLETED),
    ],
)
def test_events_arrive_as_planned(mode: Any, status: Status) -> None:
    outcome = run_plan(
        Waiting,
        FaultPlan(events=(EventPlan("confirmed", mode),)),
        input=Order("o-1"),
        payloads={"confirmed": Confirmation("ok")},
    )

    check_saga_invariants(outcome)
    assert outcome.run.status is status


def test_a_missing_payload_says_how_to_give_one() -> None:
    with pytest.raises(TypeError, match="payloads="):
        run_plan(Waiting, FaultPlan(), input=Order("o-1"))


def test_the_history_check_catches_a_compensation_out_of_order() -> None:
    outcome = run_plan(Linear, FaultPlan((Fault("ship", "fatal"),)), input=Order("o-1"))
    history = list(outcome.run.history)
    undo = [i for i, h in enumerate(history) if h.kind is HistoryKind.COMPENSATE]
    history[undo[0]], history[undo[1]] = history[undo[1]], history[undo[0]]
    tampered = attrs.evolve(outcome, runs=(attrs.evolve(outcome.run, history=tuple(history)),))

    with pytest.raises(InvariantViolation, match="out of order"):
        check_saga_invariants(tampered)


def test_the_history_check_catches_a_compensation_after_a_pivot() -> None:
    outcome = run_plan(Linear, FaultPlan(), input=Order("o-1"))
    last = outcome.run.history[-1]
    pivot: HistoryEntry = attrs.evolve(last, kind=HistoryKind.FORWARD)
    definition = attrs.evolve(
        Linear.definition,
        transitions={
            name: attrs.evolve(t, step=attrs.evolve(t.step, pivot=True, compensation=None))
            if name == "charge" and t.step
            else t
            for name, t in Linear.definition.transitions.items()
        },
    )
    undo = attrs.evolve(last, kind=HistoryKind.COMPENSATE, transition="ship", to_state="charged")
    run = attrs.evolve(
        outcome.run,
        status=Status.COMPENSATED,
        state="charged",
        history=(*outcome.run.history[:-1], pivot, undo),
    )

    with pytest.raises(InvariantViolation, match="after a pivot"):
        check_saga_invariants(attrs.evolve(outcome, definition=definition, runs=(run,)))


def test_a_crash_inside_an_undo_on_failure_step_then_the_deadline_undoes_the_step() -> None:
    outcome = run_plan(
        Checkout,
        FaultPlan((Fault("pay", "crash_after"),), deadline=1.0),
        input=Cart(),
        key=cart_key,
        setup=fresh_shop,
    )

    assert outcome.run.status is Status.COMPENSATED
    assert [e.name for e in outcome.journal if e.name == "pay.undo"], "pay was never refunded"
    shop_invariant(outcome)


class CheckoutMachine(SagaStateMachine):
    saga = Checkout
    inputs = st.builds(Cart, cart_id=st.sampled_from(["a", "b"]))
    key = staticmethod(cart_key)
    setup = staticmethod(fresh_shop)
    invariant = staticmethod(shop_invariant)


TestCheckoutMachine = CheckoutMachine.TestCase
TestCheckoutMachine.settings = settings(
    max_examples=min(settings().max_examples, 25), stateful_step_count=8, deadline=None
)


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(10.0)
    clock.advance(5)
    clock.move_to(12)
    assert clock() == 15.0


def test_the_plugin_fixtures(
    saga_engine: Engine, saga_clock: FakeClock, saga_database: str
) -> None:
    assert saga_engine.clock is saga_clock
    assert saga_database.startswith("sqlite:///")
    run = saga_engine.start(Linear, Order("o-1"))
    assert run.status is Status.COMPLETED


def test_a_project_gets_the_fixtures_without_configuration(tmp_path: Path) -> None:
    (tmp_path / "test_uses_kit.py").write_text(
        "def test_it(saga_engine, saga_clock):\n    assert saga_engine.clock is saga_clock\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "", "STATESAGA_TESTING_PROFILE": "statesaga-quick"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
