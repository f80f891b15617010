"""The kit learns contention: it finds the races that lost payments, planted back.

Each test plants one of the engine's former behaviours into the running engine
(a copy of the old rule, monkeypatched for the test only) and checks that the
kit's fault plans find it, with a small shrunk plan: an event dropped because
the run was busy, a run released without a due time when its lock was held at
a timeout, and a deadline applied before a pivot that may have taken effect.
The correct engine passes the same plans.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from kit_shop import Cart, ConfirmedCheckout, cart_key, fresh_shop, shop_invariant

from statesaga import EntityBusy
from statesaga.core._rules import Rules
from statesaga.runtime.inbox import Inbox
from statesaga.runtime.transitions import Transitions
from statesaga.testing import (
    Fault,
    FaultPlan,
    InvariantViolation,
    assert_compensates,
    fault_plans,
)

BUDGET = max(settings().max_examples, 150)
# found is what these tests show; shrinking a contention plan (many engines, threads) to the
# last fault is left to the kit's own planted-bug tests, which measure it
FOUND = settings(
    settings(),
    derandomize=True,
    max_examples=BUDGET,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)


def attack(**options: Any) -> None:
    assert_compensates(
        ConfirmedCheckout,
        input=Cart(),
        key=cart_key,
        setup=fresh_shop,
        invariant=shop_invariant,
        **options,
    )


def found(in_message: str, **narrow: Any) -> InvariantViolation:
    """The violation the kit reports, searching plans narrowed to the race at hand."""
    plans = fault_plans(ConfirmedCheckout.definition, max_faults=1, **narrow)
    with pytest.raises(InvariantViolation) as caught:
        attack(settings=FOUND, plans=plans)
    violation = caught.value
    print(f"\nfound after {violation.examples_to_find} examples")
    assert violation.examples_to_find is not None
    assert in_message in str(violation), str(violation)
    return violation


def plan_of(violation: InvariantViolation) -> str:
    message = str(violation)
    return next(line for line in message.splitlines() if line.startswith("plan: "))


def test_the_kit_finds_a_webhook_dropped_because_the_run_was_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Inbox.send

    def dropping_send(self: Inbox, instance_id: str, *args: Any) -> Generator[Any, Any, Any]:
        # the old behaviour: a busy run answers EntityBusy and nothing is recorded
        row = self.store.get(instance_id)
        assert row is not None
        locks = self.claims.locks.locks
        assert locks is not None
        key = row.entity_key or f"instance:{row.id}"
        probe = locks.try_acquire(key, "probe", 1.0, self.clock())  # type: ignore[union-attr]
        if probe is None:
            raise EntityBusy(f"{key} is busy", key=key)
        locks.release(probe)  # type: ignore[union-attr]
        return (yield from original(self, instance_id, *args))

    monkeypatch.setattr(Inbox, "send", dropping_send)
    violation = found("must never be an error to the sender", kinds=("retryable",), undo_kinds=())
    # delivered while someone holds the cart's lock, at once, or while a step runs
    plan = plan_of(violation)
    assert any(f"paid: {mode}" in plan for mode in ("while_locked", "burst", "early")), plan


def test_the_kit_finds_a_run_stranded_by_a_timeout_that_found_its_lock_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Transitions.release

    def stranding_release(self: Transitions, run: Any, *, busy: bool = False) -> None:
        # the old behaviour: a run let go because its lock was busy kept no due time
        original(self, run, busy=busy)
        if busy:
            self.store.execute_raw(  # type: ignore[attr-defined]
                "UPDATE statesaga_instances SET due_at = NULL WHERE id = ?", (run.id,)
            )

    monkeypatch.setattr(Transitions, "release", stranding_release)
    violation = found("no worker will ever pick it up", kinds=("retryable",), undo_kinds=())
    assert "lock held at recovery" in plan_of(violation)


def test_the_kit_finds_a_deadline_that_overtakes_a_pivot_that_took_effect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the old rule: only a completed pivot binds the run; a pending one that ran before a
    # crash (or whose answer was lost) is overtaken by the deadline
    monkeypatch.setattr(Rules, "bound", lambda self, snapshot: snapshot.pivoted)
    steps = sorted(
        name for name, t in ConfirmedCheckout.definition.transitions.items() if t.step is not None
    )
    # one call that takes effect and is then lost (a crash, a failed answer), a deadline
    plans = st.builds(
        FaultPlan,
        st.tuples(
            st.builds(
                Fault,
                st.sampled_from(steps),
                st.sampled_from(("crash_after", "effect_then_raise")),
            )
        ),
        st.just(()),
        st.sampled_from((1.0, 30.0, 120.0)),
    )
    with pytest.raises(InvariantViolation) as caught:
        attack(settings=FOUND, plans=plans)
    violation = caught.value
    print(f"\nfound after {violation.examples_to_find} examples")
    assert "may have taken effect" in str(violation)
    assert "settle" in plan_of(violation)


def test_the_engine_keeps_its_promises_under_the_same_plans() -> None:
    attack(settings=settings(settings(), derandomize=True, max_examples=min(BUDGET, 100)))
