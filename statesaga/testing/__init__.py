"""statesaga.testing: let hypothesis attack your sagas with failures, crashes and races.

Strategies generate fault plans for a definition (:func:`fault_plans`), a
driver runs a plan against a real store (:func:`run_plan`), and the checks
prove the saga invariants and your own domain invariant on every outcome
(:func:`check_saga_invariants`, :func:`assert_compensates`).
:class:`SagaStateMachine` interleaves many runs and events, and the pytest
plugin (loaded automatically) gives ``saga_engine`` and ``saga_clock``
fixtures. See the testing guide for a worked example.

This package imports hypothesis; ``import statesaga`` does not import it.
"""

from __future__ import annotations

from statesaga.testing.driver import (
    Crash,
    FakeClock,
    InjectedFailure,
    InjectedFatalFailure,
    JournalEntry,
    Outcome,
    run_plan,
)
from statesaga.testing.invariants import (
    InvariantViolation,
    assert_compensates,
    check_saga_invariants,
)
from statesaga.testing.machine import SagaStateMachine
from statesaga.testing.plans import EventPlan, Fault, FaultPlan, fault_plans

__all__ = [
    # plans
    "FaultPlan",
    "Fault",
    "EventPlan",
    "fault_plans",
    # running a plan
    "run_plan",
    "Outcome",
    "JournalEntry",
    "FakeClock",
    "Crash",
    "InjectedFailure",
    "InjectedFatalFailure",
    # checks
    "check_saga_invariants",
    "assert_compensates",
    "InvariantViolation",
    "SagaStateMachine",
]
