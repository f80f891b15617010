"""The kit finds real bugs: five planted in copies of a checkout, each reported with
its shrunk plan, within the active hypothesis profile.

Each test prints how many plans hypothesis tried before the first failing one
(``pytest -s`` shows them); the shrunk scenario is in the error's message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from kit_shop import (
    Cart,
    ChargesTwice,
    Checkout,
    CompensatesThePivot,
    ForgetsAReservation,
    UndoesInForwardOrder,
    cart_key,
    fresh_shop,
    no_key,
    shop_invariant,
)

from statesaga.testing import InvariantViolation, assert_compensates

# the default profile's budget (a quick smoke profile must not starve the search), and a
# fixed seed, so that the examples-to-find count is the same from run to run
BUDGET = max(settings().max_examples, 100)
FOUND = settings(settings(), derandomize=True, max_examples=BUDGET)


def attack(saga: Any, key: Callable[[Cart], str | None] = cart_key, **options: Any) -> None:
    assert_compensates(
        saga,
        input=Cart(),
        key=key,
        setup=fresh_shop,
        invariant=shop_invariant,
        **options,
    )


PLANTED = [
    pytest.param(
        ForgetsAReservation, cart_key, "pay", "still in place", id="forgets-a-reservation"
    ),
    pytest.param(UndoesInForwardOrder, cart_key, "pay", "still", id="undoes-in-forward-order"),
    pytest.param(
        ChargesTwice, cart_key, "pay: crash_after", "charged 50", id="effect-applied-twice"
    ),
    pytest.param(CompensatesThePivot, cart_key, "send", "voided", id="pivot-compensated"),
    pytest.param(Checkout, no_key, "duplicate_start", "checked out 2 times", id="no-entity-lock"),
]


@pytest.mark.parametrize(("saga", "key", "in_plan", "in_message"), PLANTED)
def test_the_kit_finds_a_planted_bug(
    saga: Any, key: Callable[[Cart], str | None], in_plan: str, in_message: str
) -> None:
    with pytest.raises(InvariantViolation) as caught:
        attack(saga, key, settings=FOUND)
    violation = caught.value
    print(f"\n{saga.name} ({key.__name__}): found after {violation.examples_to_find} examples")
    assert violation.examples_to_find is not None
    assert violation.examples_to_find <= BUDGET
    message = str(violation)
    assert in_message in message
    # the shrunk plan is printed, and small: one or two faults
    plan_line = next(line for line in message.splitlines() if line.startswith("plan: "))
    print(plan_line)
    assert in_plan in plan_line, plan_line
    assert len(violation.outcome.plan.faults) <= 2, plan_line
    assert "calls:" in message
    assert "forward" in message  # the resulting history


def test_the_correct_checkout_passes_every_plan() -> None:
    attack(Checkout, settings=settings(max_examples=min(settings().max_examples, 150)))
