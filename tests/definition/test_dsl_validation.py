"""A saga is validated when its class is created.

Every malformed definition fails at import time with a ``DefinitionError``
whose message names the saga, the state or transition at fault, and says how
to fix it. Each test below declares one mistake, the way a user would make it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
import pytest

from statesaga import DefinitionError, Event, Retry, Saga, State, StepContext
from statesaga.dsl import event_name

# -- the shop's types and steps the sagas below are made of ------------------------------


@attrs.frozen
class CartInput:
    cart_id: str = "cart-1"


@attrs.frozen
class CartData:
    reserved: bool = False
    charged: bool = False
    shipped: bool = False


@attrs.frozen
class PaymentConfirmed:
    payment_id: str = "pay-1"


Ctx = StepContext[CartInput, CartData]


def validate_cart(ctx: Ctx) -> None:
    return None


def reserve_inventory(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, reserved=True)


def release_inventory(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, reserved=False)


def charge_card(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, charged=True)


def refund_card(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, charged=False)


def ship_order(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, shipped=True)


def recall_shipment(ctx: Ctx) -> CartData:
    return attrs.evolve(ctx.data, shipped=False)


def needs_review(ctx: Ctx) -> bool:
    return ctx.input.cart_id.startswith("b2b-")


def takes_two_arguments(ctx: Ctx, extra: int) -> None:
    return None


# -- helpers ----------------------------------------------------------------------------


def rejected(declare: Callable[[], object]) -> DefinitionError:
    """The ``DefinitionError`` raised while ``declare`` declares a saga class."""
    with pytest.raises(DefinitionError) as excinfo:
        declare()
    return excinfo.value


def assert_explains(
    error: DefinitionError,
    *,
    saga: str,
    fix: str,
    state: str | None = None,
    transition: str | None = None,
) -> None:
    """The error names the saga and the culprit (message and attributes) and gives the fix."""
    message = str(error)
    assert f"saga {saga!r}" in message
    assert error.saga == saga
    if state is not None:
        assert re.search(rf"\b{state}\b", message)
        assert error.state == state
    if transition is not None:
        assert re.search(rf"\b{transition}\b", message)
        assert error.transition == transition
    assert fix in message


# -- the graph --------------------------------------------------------------------------


def test_a_saga_needs_an_initial_state() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State()
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "no initial state" in str(error)
    assert_explains(error, saga="checkout", fix="State(initial=True)")


def test_a_saga_has_exactly_one_initial_state() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            draft = State(initial=True)
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)
            submit = draft.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "several initial states (new, draft)" in str(error)
    assert_explains(error, saga="checkout", fix="keep initial=True on exactly one")
    assert error.state == "draft"


def test_a_saga_needs_a_final_state() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            validated = State()
            validate = new.to(validated).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert_explains(error, saga="checkout", fix="State(final=True)")


def test_a_state_cannot_be_both_initial_and_final() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True, final=True)

    assert_explains(
        rejected(declare), saga="checkout", state="new", fix="a saga needs at least one step"
    )


def test_a_transition_to_a_state_not_declared_on_the_saga_is_rejected() -> None:
    def declare() -> None:
        forgotten = State()  # never made a class attribute

        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)
            reserve = new.to(forgotten).run(reserve_inventory, undo=release_inventory)

    error = rejected(declare)
    assert_explains(
        error,
        saga="checkout",
        transition="reserve",
        fix="declare it as a class attribute of the saga",
    )
    assert "goes to a State() that is not a class attribute" in str(error)


def test_a_transition_to_another_sagas_state_names_that_saga() -> None:
    class Refund(Saga[CartInput, CartData]):
        name = "refund"
        new = State(initial=True)
        refunded = State(final=True)
        refund = new.to(refunded).run(refund_card, pivot=True)

    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            refunded = State(final=True)
            charge = new.to(Refund.refunded).run(charge_card, undo=refund_card)

    error = rejected(declare)
    assert_explains(error, saga="checkout", transition="charge", fix="declare it as a class")
    assert "state 'refunded' of Refund" in str(error)


def test_the_same_state_under_two_names_is_a_duplicate() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            finished = done  # an alias is a second state with the same identity
            validate = new.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "declared as 'done' and 'finished'" in str(error)
    assert_explains(error, saga="checkout", state="finished", fix="give each state its own State()")


def test_the_same_transition_under_two_names_is_a_duplicate() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)
            check = validate

    error = rejected(declare)
    assert "declared as 'validate' and 'check'" in str(error)
    assert_explains(error, saga="checkout", transition="check", fix="declare it once")


@pytest.mark.parametrize(
    "event", ["reserved", "reserve"], ids=["like-a-state", "like-a-transition"]
)
def test_an_event_cannot_share_a_name_with_a_state_or_transition(event: str) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            reserved = State()
            done = State(final=True)
            reserve = new.to(reserved).run(reserve_inventory, undo=release_inventory)
            confirm = reserved.to(done).on(event)

    error = rejected(declare)
    assert repr(event) in str(error)
    assert_explains(error, saga="checkout", transition="confirm", fix="rename the event")


def test_one_state_cannot_accept_the_same_event_on_two_transitions() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            waiting = State()
            done = State(final=True)
            reserve = new.to(waiting).run(reserve_inventory, undo=release_inventory)
            paid = waiting.to(done).on("payment_succeeded")
            paid_again = waiting.to(done).on("payment_succeeded")

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="waiting",
        transition="paid_again",
        fix="give them distinct events",
    )


def test_an_event_name_must_be_an_identifier() -> None:
    with pytest.raises(DefinitionError, match="must be an identifier such as 'payment_succeeded'"):
        State().to(State()).on("payment succeeded")


def test_an_unreachable_state_is_rejected() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            orphaned = State()
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)
            late = orphaned.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "unreachable from the initial state 'new'" in str(error)
    assert_explains(
        error, saga="checkout", state="orphaned", fix="add a transition into it or remove it"
    )


def test_a_state_with_no_way_to_a_final_state_is_rejected() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            manual_review = State()  # entered, but nothing leaves it
            done = State(final=True)
            review = new.to(manual_review).when(needs_review)
            validate = new.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "no path to a final state" in str(error)
    assert_explains(
        error,
        saga="checkout",
        state="manual_review",
        fix="add a transition from it towards a final state",
    )


def test_a_transition_out_of_a_final_state_is_rejected() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            validate = new.to(done).run(validate_cart, read_only=True)
            reopen = done.to(new).on("reopen_requested")

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="done",
        transition="reopen",
        fix="remove the transition or make the state non-final",
    )


def test_two_unguarded_automatic_transitions_out_of_one_state_are_rejected() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            reserved = State()
            charged = State()
            done = State(final=True)
            reserve = new.to(reserved).run(reserve_inventory, undo=release_inventory)
            charge = new.to(charged).run(charge_card, undo=refund_card)
            ship = reserved.to(done).run(ship_order, pivot=True)
            ship_charged = charged.to(done).run(ship_order, pivot=True)

    error = rejected(declare)
    assert "(reserve, charge)" in str(error)
    assert_explains(
        error,
        saga="checkout",
        state="new",
        transition="charge",
        fix="add .when(guard) to all but one",
    )


# -- waiting states and timeouts ----------------------------------------------------------


def test_a_waiting_state_needs_an_event_out_of_it() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State(timeout=timedelta(minutes=15))
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            give_up = awaiting_payment.to(done).on_timeout()

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="awaiting_payment",
        fix="add a transition with .on('event') from it, or drop the timeout",
    )


def test_a_waiting_state_cannot_also_have_an_unguarded_automatic_transition() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State()
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            paid = awaiting_payment.to(done).on("payment_succeeded")
            skip = awaiting_payment.to(done)

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="awaiting_payment",
        transition="skip",
        fix="guard it with .when(...)",
    )


def test_on_timeout_needs_a_state_with_a_timeout() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State()  # no timeout
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            paid = awaiting_payment.to(done).on("payment_succeeded")
            give_up = awaiting_payment.to(done).on_timeout()

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="awaiting_payment",
        transition="give_up",
        fix="add State(timeout=...)",
    )


def test_a_guard_on_a_timeout_transition_is_rejected() -> None:
    # time passing has nothing for a guard to judge: it would be silently ignored
    # (a guard on an event transition judges the event: see test_guarded_events.py)
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State(timeout=60)
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            paid = awaiting_payment.to(done).on("payment_succeeded")
            give_up = awaiting_payment.to(done).on_timeout().unless(needs_review)

    error = rejected(declare)
    assert ".on_timeout()" in str(error)
    assert_explains(error, saga="checkout", transition="give_up", fix="drop .when()/.unless()")


@pytest.mark.parametrize("timeout", [0, -1.5, timedelta(0), timedelta(seconds=-5)])
def test_a_state_timeout_must_be_positive(timeout: float | timedelta) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State(timeout=timeout)
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            paid = awaiting_payment.to(done).on("payment_succeeded")

    assert_explains(
        rejected(declare),
        saga="checkout",
        state="awaiting_payment",
        fix="must be positive",
    )


@pytest.mark.parametrize("timeout", [0, -3, timedelta(seconds=-1)])
def test_a_step_timeout_must_be_positive(timeout: float | timedelta) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True, timeout=timeout)

    assert_explains(rejected(declare), saga="checkout", transition="charge", fix="use a value > 0")


@pytest.mark.parametrize("run_deadline", [0, -60, timedelta(minutes=-1)])
def test_the_run_deadline_must_be_positive(run_deadline: float | timedelta) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            deadline = run_deadline
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert "the run deadline must be positive" in str(error)
    assert_explains(error, saga="checkout", fix="use a value > 0")


def test_a_duration_must_be_seconds_or_a_timedelta() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True, timeout="10s")  # type: ignore[arg-type]

    assert_explains(
        rejected(declare), saga="checkout", transition="charge", fix="timedelta(seconds=5)"
    )


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"attempts": 0}, "Retry(attempts=0) must be a whole number >= 1"),
        ({"initial_interval": 0}, "Retry(initial_interval=0.0) must be positive"),
        ({"jitter": 2}, "Retry(jitter=2.0) must be between 0 and 1"),
        ({"backoff": 0.5}, "Retry(backoff=0.5) must be >= 1"),
        ({"max_interval": -1}, "Retry(max_interval=-1.0) must be positive"),
        ({"non_retryable": "ValueError"}, "takes exception classes"),
    ],
    ids=["attempts", "initial_interval", "jitter", "backoff", "max_interval", "non_retryable"],
)
def test_bad_retry_settings_fail_where_the_policy_is_written(
    settings: dict[str, Any], fix: str
) -> None:
    # A Retry is validated when it is built, inside the class body, before the saga
    # exists: the message cannot name the saga, but the traceback points at the line.
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True, retry=Retry(**settings))

    error = rejected(declare)
    assert fix in str(error)


# -- steps and compensations ------------------------------------------------------------


def test_a_step_with_side_effects_needs_a_compensation() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            reserved = State()
            done = State(final=True)
            reserve = new.to(reserved).run(reserve_inventory)  # no undo, not a pivot
            charge = reserved.to(done).run(charge_card, pivot=True)

    assert_explains(
        rejected(declare),
        saga="checkout",
        transition="reserve",
        fix="add undo=..., or mark it read_only=True if it has no side effect, "
        "or pivot=True if it cannot be undone",
    )


def test_a_pivot_step_cannot_have_a_compensation() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, undo=refund_card, pivot=True)

    assert_explains(
        rejected(declare),
        saga="checkout",
        transition="charge",
        fix="remove undo=... or drop pivot=True",
    )


def test_a_step_after_the_pivot_cannot_have_a_compensation() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            charged = State()
            done = State(final=True)
            charge = new.to(charged).run(charge_card, pivot=True)
            ship = charged.to(done).run(ship_order, undo=recall_shipment)

    assert_explains(
        rejected(declare),
        saga="checkout",
        transition="ship",
        fix="remove undo=... or move the pivot later",
    )


def test_a_read_only_step_cannot_have_a_compensation() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            validate = new.to(done).run(validate_cart, undo=release_inventory, read_only=True)

    assert_explains(
        rejected(declare), saga="checkout", transition="validate", fix="drop one of them"
    )


def test_a_pivot_cannot_be_read_only() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True, read_only=True)

    assert_explains(rejected(declare), saga="checkout", transition="charge", fix="drop read_only")


def test_undo_on_failure_needs_a_compensation() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True, undo_on_failure=True)

    assert_explains(rejected(declare), saga="checkout", transition="charge", fix="add undo=...")


def test_a_transition_runs_one_step() -> None:
    with pytest.raises(DefinitionError, match="split it into two transitions"):
        State().to(State()).run(reserve_inventory, undo=release_inventory).run(charge_card)


def test_a_transition_has_one_guard() -> None:
    with pytest.raises(DefinitionError, match="combine the conditions in one guard function"):
        State().to(State()).when(needs_review).unless(needs_review)


def test_a_transition_targets_a_state() -> None:
    with pytest.raises(DefinitionError, match="the target must be a State"):
        State().to("done")  # type: ignore[arg-type]


@pytest.mark.parametrize("culprit", ["step", "compensation", "guard"])
def test_a_callable_whose_signature_does_not_fit_is_rejected(culprit: str) -> None:
    step = takes_two_arguments if culprit == "step" else reserve_inventory
    undo = takes_two_arguments if culprit == "compensation" else release_inventory
    guard = takes_two_arguments if culprit == "guard" else needs_review

    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            reserved = State()
            done = State(final=True)
            reserve = new.to(reserved).when(guard).run(step, undo=undo)
            validate = new.to(done).run(validate_cart, read_only=True)
            charge = reserved.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert "has the signature takes_two_arguments(" in str(error)
    assert_explains(
        error,
        saga="checkout",
        transition="reserve",
        fix="is called with (ctx); make it accept exactly that",
    )


def test_a_step_must_be_callable() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run("charge_card", pivot=True)  # type: ignore[arg-type]

    assert_explains(rejected(declare), saga="checkout", transition="charge", fix="not callable")


def test_output_must_take_input_and_data() -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

            @staticmethod
            def output(data: CartData) -> CartData:
                return data

    assert_explains(
        rejected(declare), saga="checkout", fix="is called with (input, data); make it accept"
    )


# -- types ------------------------------------------------------------------------------


class PlainCart:
    """Not an attrs class nor a dataclass: cattrs cannot structure it."""

    cart_id: str = "cart-1"


class DatabaseSession:
    """A live resource: no JSON shape."""


@attrs.frozen
class CartWithSession:
    cart_id: str = "cart-1"
    session: DatabaseSession = attrs.field(factory=DatabaseSession)


@attrs.frozen
class CartWithLock:
    lock: threading.Lock = attrs.field(factory=threading.Lock)


ATTRS_FIX = "use attrs classes with JSON-friendly field types, or register hooks"
UNSTRUCTURABLE = [
    pytest.param(PlainCart, "is neither an attrs class", "@attrs.define", id="plain"),
    pytest.param(CartWithSession, "DatabaseSession", ATTRS_FIX, id="attrs-field-of-plain-class"),
    pytest.param(CartWithLock, "Unsupported type", ATTRS_FIX, id="attrs-field-of-lock"),
]


@pytest.mark.parametrize(("bad_type", "why", "fix"), UNSTRUCTURABLE)
def test_an_input_type_cattrs_cannot_structure_is_rejected(
    bad_type: type, why: str, fix: str
) -> None:
    def declare() -> None:
        class Checkout(Saga[bad_type, CartData]):  # type: ignore[valid-type]
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert f"input type {bad_type.__name__}" in str(error)
    assert why in str(error)
    assert_explains(error, saga="checkout", fix=fix)


@pytest.mark.parametrize(("bad_type", "why", "fix"), UNSTRUCTURABLE)
def test_a_context_type_cattrs_cannot_structure_is_rejected(
    bad_type: type, why: str, fix: str
) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, bad_type]):  # type: ignore[valid-type]
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert f"context type {bad_type.__name__}" in str(error)
    assert why in str(error)
    assert_explains(error, saga="checkout", fix=fix)


@pytest.mark.parametrize(("bad_type", "why", "fix"), UNSTRUCTURABLE)
def test_an_event_payload_type_cattrs_cannot_structure_is_rejected(
    bad_type: type, why: str, fix: str
) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            new = State(initial=True)
            awaiting_payment = State()
            done = State(final=True)
            reserve = new.to(awaiting_payment).run(reserve_inventory, undo=release_inventory)
            paid = awaiting_payment.to(done).on("payment_succeeded", payload=bad_type)

    error = rejected(declare)
    message = str(error)
    assert f"event 'payment_succeeded' on transition 'paid' {bad_type.__name__}" in message
    assert why in message
    assert_explains(error, saga="checkout", transition="paid", fix=fix)


def test_a_context_type_without_defaults_needs_initial_context() -> None:
    @attrs.frozen
    class Basket:
        cart_id: str  # no default: Basket() cannot be built

    def charge_basket(ctx: StepContext[CartInput, Basket]) -> None:
        return None

    def declare() -> None:
        class Checkout(Saga[CartInput, Basket]):
            name = "checkout"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_basket, pivot=True)

    error = rejected(declare)
    assert "context type Basket cannot be built without arguments" in str(error)
    assert_explains(
        error,
        saga="checkout",
        fix="give its fields defaults, or define a static method initial_context(input)",
    )


def test_initial_context_builds_a_context_type_without_defaults() -> None:
    @attrs.frozen
    class Basket:
        cart_id: str

    def charge_basket(ctx: StepContext[CartInput, Basket]) -> None:
        return None

    class Checkout(Saga[CartInput, Basket]):
        name = "checkout"
        new = State(initial=True)
        done = State(final=True)
        charge = new.to(done).run(charge_basket, pivot=True)

        @staticmethod
        def initial_context(saga_input: CartInput) -> Basket:
            return Basket(saga_input.cart_id)

    assert Checkout.definition.make_initial_context(CartInput("cart-9")) == Basket("cart-9")


# -- the class itself -------------------------------------------------------------------


def test_a_saga_needs_a_name() -> None:
    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData]):
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    error = rejected(declare)
    assert "saga class CompleteCart has no name" in str(error)
    assert "name = 'complete-cart'" in str(error)  # the fix, spelled out
    assert error.saga == "CompleteCart"


def test_a_saga_declares_its_input_and_context_types() -> None:
    def declare() -> None:
        class CompleteCart(Saga):  # type: ignore[type-arg]
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    assert_explains(
        rejected(declare),
        saga="complete-cart",
        fix="class CompleteCart(Saga[MyInput, MyContext])",
    )


@pytest.mark.parametrize("bad_version", [0, -1, "2", True])
def test_a_version_is_a_whole_number_from_one(bad_version: object) -> None:
    def declare() -> None:
        class Checkout(Saga[CartInput, CartData]):
            name = "checkout"
            version = bad_version  # type: ignore[assignment]  # the mistake under test
            new = State(initial=True)
            done = State(final=True)
            charge = new.to(done).run(charge_card, pivot=True)

    assert_explains(rejected(declare), saga="checkout", fix="a whole number >= 1")


# -- what a valid saga compiles to ------------------------------------------------------


class CompleteCart(Saga[CartInput, CartData]):
    """Reserve, charge (or wait for the customer to confirm), then ship."""

    name = "complete-cart"
    version = 2
    deadline = timedelta(minutes=5)

    new = State(initial=True)
    validated = State()
    reserved = State()
    awaiting_payment = State(timeout=timedelta(minutes=15))
    charged = State()
    shipped = State(final=True)

    validate = new.to(validated).run(validate_cart, read_only=True)
    reserve = validated.to(reserved).run(
        reserve_inventory, undo=release_inventory, undo_on_failure=True
    )
    hold = reserved.to(awaiting_payment).when(needs_review)
    charge = reserved.to(charged).run(charge_card, pivot=True, retry=Retry(attempts=5), timeout=30)
    confirmed = awaiting_payment.to(charged).on("payment_confirmed", payload=PaymentConfirmed)
    expired = awaiting_payment.to(charged).on_timeout()
    ship = charged.to(shipped).run(ship_order, pivot=True)


def test_a_valid_saga_compiles_to_its_definition() -> None:
    definition = CompleteCart.definition

    assert definition.key == ("complete-cart", 2)
    assert definition.input_type is CartInput
    assert definition.context_type is CartData
    assert definition.initial == "new"
    assert definition.deadline == 300.0
    assert definition.saga_class is CompleteCart
    assert list(definition.states) == [
        "new",
        "validated",
        "reserved",
        "awaiting_payment",
        "charged",
        "shipped",
    ]
    assert definition.states["shipped"].final
    assert definition.states["awaiting_payment"].timeout == 900.0
    edges = {t.name: (t.source, t.target) for t in definition.transitions.values()}
    assert edges == {
        "validate": ("new", "validated"),
        "reserve": ("validated", "reserved"),
        "hold": ("reserved", "awaiting_payment"),
        "charge": ("reserved", "charged"),
        "confirmed": ("awaiting_payment", "charged"),
        "expired": ("awaiting_payment", "charged"),
        "ship": ("charged", "shipped"),
    }
    assert definition.make_initial_context(CartInput()) == CartData()


def test_step_markers_are_reflected_in_the_definition() -> None:
    steps = {name: t.step for name, t in CompleteCart.definition.transitions.items()}

    validate, reserve, charge = steps["validate"], steps["reserve"], steps["charge"]
    assert validate is not None
    assert validate.read_only
    assert validate.compensation is None
    assert reserve is not None
    assert reserve.compensation is release_inventory
    assert reserve.compensate_on_failure
    assert not reserve.pivot
    assert charge is not None
    assert charge.pivot
    assert charge.compensation is None
    assert charge.retry == Retry(attempts=5)
    assert charge.timeout == 30.0
    assert reserve.retry == Retry()  # the default: 3 attempts
    assert reserve.compensation_retry == Retry(attempts=5)  # compensations try harder
    assert steps["hold"] is None
    assert steps["confirmed"] is None


def test_guards_events_and_timeouts_are_reflected_in_the_definition() -> None:
    definition = CompleteCart.definition
    hold, charge = definition.transitions["hold"], definition.transitions["charge"]
    confirmed = definition.transitions["confirmed"]
    expired = definition.transitions["expired"]

    assert hold.guard is needs_review
    assert hold.guard_name == "needs_review"
    assert charge.guard is None
    assert charge.automatic
    # guarded edges are tried first, in declaration order; the unguarded one is the fallback
    assert [t.name for t in definition.automatic_from["reserved"]] == ["hold", "charge"]
    assert confirmed.event == "payment_confirmed"
    assert not confirmed.automatic
    assert confirmed.payload_type is PaymentConfirmed
    assert definition.events_in("awaiting_payment") == ("payment_confirmed",)
    assert definition.events_in("reserved") == ()
    assert expired.on_timeout
    assert definition.timeout_from == {"awaiting_payment": expired}


def test_unless_negates_a_guard() -> None:
    class Checkout(Saga[CartInput, CartData]):
        name = "checkout"
        new = State(initial=True)
        reviewed = State()
        done = State(final=True)
        fast_track = new.to(done).unless(needs_review).run(charge_card, pivot=True)
        review = new.to(reviewed).run(validate_cart, read_only=True)
        charge = reviewed.to(done).run(charge_card, pivot=True)

    fast_track = Checkout.definition.transitions["fast_track"]
    assert fast_track.guard_negated
    assert fast_track.guard_name == "not needs_review"


def test_an_abstract_base_shares_helpers_and_types_with_its_sagas() -> None:
    class ShopSaga(Saga[CartInput, CartData]):
        """No name and no states: not compiled, only inherited from."""

    class Checkout(ShopSaga):
        name = "checkout"
        new = State(initial=True)
        done = State(final=True)
        charge = new.to(done).run(charge_card, pivot=True)

    assert not hasattr(ShopSaga, "definition")
    assert Checkout.definition.input_type is CartInput
    assert Checkout.definition.context_type is CartData


# -- the graph hash ---------------------------------------------------------------------


def checkout_saga(
    *,
    charge_step: Callable[..., Any] = charge_card,
    event: str = "payment_confirmed",
    charge_is_pivot: bool = True,
    with_review: bool = False,
    reserve_undo_on_failure: bool = False,
    retry: Retry | None = None,
    run_deadline: float | None = None,
    saga_version: int = 1,
) -> type[Saga[CartInput, CartData]]:
    """A fresh checkout saga class, varied by the arguments."""

    class Checkout(Saga[CartInput, CartData]):
        name = "checkout"
        version = saga_version
        deadline = run_deadline
        new = State(initial=True)
        reserved = State()
        awaiting_payment = State(timeout=60)
        charged = State()
        done = State(final=True)
        if with_review:
            reviewed = State()
            review = new.to(reviewed).when(needs_review).run(validate_cart, read_only=True)
            reserve_reviewed = reviewed.to(reserved).run(reserve_inventory, undo=release_inventory)
        reserve = new.to(reserved).run(
            reserve_inventory,
            undo=release_inventory,
            undo_on_failure=reserve_undo_on_failure,
            retry=retry,
        )
        hold = reserved.to(awaiting_payment).when(needs_review)
        confirmed = awaiting_payment.to(charged).on(event)
        if charge_is_pivot:
            charge = reserved.to(charged).run(charge_step, pivot=True)
            ship = charged.to(done).run(ship_order, pivot=True)
        else:
            charge = reserved.to(charged).run(charge_step, undo=refund_card)
            ship = charged.to(done).run(ship_order, pivot=True)

    return Checkout


def test_graph_hash_is_stable_for_the_same_graph() -> None:
    baseline = checkout_saga().definition.graph_hash

    assert len(baseline) == 16
    assert checkout_saga().definition.graph_hash == baseline
    # retry policies, deadlines and versions tune how a run goes, not the graph it walks
    assert checkout_saga(retry=Retry(attempts=9)).definition.graph_hash == baseline
    assert checkout_saga(run_deadline=30).definition.graph_hash == baseline
    assert checkout_saga(saga_version=2).definition.graph_hash == baseline


@pytest.mark.parametrize(
    "change",
    [
        {"with_review": True},
        {"event": "payment_succeeded"},
        {"charge_step": refund_card},
        {"charge_is_pivot": False},
        {"reserve_undo_on_failure": True},
    ],
    ids=[
        "new-state-and-edges",
        "renamed-event",
        "other-step-function",
        "pivot-to-compensated",
        "undo-on-failure",
    ],
)
def test_graph_hash_changes_when_the_graph_changes(change: dict[str, Any]) -> None:
    assert checkout_saga(**change).definition.graph_hash != checkout_saga().definition.graph_hash


# -- optional weight stays optional -----------------------------------------------------


def test_importing_statesaga_loads_no_optional_dependency() -> None:
    heavy = ["redis", "psycopg", "graphviz", "hypothesis", "sqlalchemy.dialects.postgresql"]
    script = f"import sys, statesaga; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"import statesaga loaded {result.stdout.strip()}"


def test_a_step_into_a_final_state_needs_no_compensation() -> None:
    class Ship(Saga[CartInput, CartData]):
        name = "ship"
        new = State(initial=True)
        packed = State()
        shipped = State(final=True)

        pack = new.to(packed).run(reserve_inventory, undo=release_inventory)
        ship = packed.to(shipped).run(ship_order)  # its success ends the saga: nothing to undo

    assert Ship.definition.transitions["ship"].step is not None


def test_the_graph_hash_does_not_depend_on_the_order_states_are_declared_in() -> None:
    class First(Saga[CartInput, CartData]):
        name = "ordered"
        new = State(initial=True)
        done = State(final=True)
        check = new.to(done).run(validate_cart, read_only=True)

    class Second(Saga[CartInput, CartData]):
        name = "ordered"
        done = State(final=True)
        new = State(initial=True)
        check = new.to(done).run(validate_cart, read_only=True)

    assert First.definition.graph_hash == Second.definition.graph_hash


# -- annotations against the saga's types (what mypy cannot see in a class body) ----------


@attrs.frozen
class Other:
    nothing: str = ""


def wrong_context(ctx: StepContext[Other, Other]) -> None:
    return None


def returns_text(ctx: Ctx) -> str:
    return "done"


async def returns_text_later(ctx: Ctx) -> str:
    return "done"


def undo_with_other_context(ctx: StepContext[CartInput, Other]) -> None:
    return None


def guard_answering_text(ctx: Ctx) -> str:
    return "yes"


def test_a_step_annotated_with_another_saga_s_context_is_rejected() -> None:
    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData]):
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            finish = new.to(done).run(wrong_context, read_only=True)

    error = rejected(declare)
    assert "takes ctx: StepContext[Other, Other]" in str(error)
    assert "called with a StepContext[CartInput, CartData]" in str(error)
    assert_explains(
        error,
        saga="complete-cart",
        transition="finish",
        fix="annotate it ctx: StepContext[CartInput, CartData]",
    )


@pytest.mark.parametrize("step", [returns_text, returns_text_later])
def test_a_step_returning_something_else_than_its_data_is_rejected(step: Any) -> None:
    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData]):
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            finish = new.to(done).run(step, read_only=True)

    error = rejected(declare)
    assert f"step 'finish' ({step.__qualname__}) returns str" in str(error)
    assert_explains(
        error,
        saga="complete-cart",
        transition="finish",
        fix="annotate it -> CartData | None and return new data or None",
    )


def test_a_compensation_annotated_with_another_context_type_is_rejected() -> None:
    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData]):
            name = "complete-cart"
            new = State(initial=True)
            reserved = State()
            done = State(final=True)
            reserve = new.to(reserved).run(reserve_inventory, undo=undo_with_other_context)
            finish = reserved.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert "compensation of step 'reserve'" in str(error)
    assert_explains(
        error,
        saga="complete-cart",
        transition="reserve",
        fix="annotate it ctx: StepContext[CartInput, CartData]",
    )


def test_a_guard_must_answer_a_bool() -> None:
    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData]):
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            review = new.to(done).when(guard_answering_text)
            finish = new.to(done).run(validate_cart, read_only=True)

    error = rejected(declare)
    assert_explains(error, saga="complete-cart", transition="review", fix="return a bool")


def test_a_declared_output_type_must_match_output() -> None:
    @attrs.frozen
    class Receipt:
        order_id: str

    def declare() -> None:
        class CompleteCart(Saga[CartInput, CartData, Receipt]):
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            finish = new.to(done).run(validate_cart, read_only=True)

            @staticmethod
            def output(saga_input: CartInput, data: CartData) -> CartData:
                return data

    error = rejected(declare)
    assert_explains(error, saga="complete-cart", fix="make them agree")

    def declare_without_output() -> None:
        class CompleteCart(Saga[CartInput, CartData, Receipt]):
            name = "complete-cart"
            new = State(initial=True)
            done = State(final=True)
            finish = new.to(done).run(validate_cart, read_only=True)

    error = rejected(declare_without_output)
    assert_explains(error, saga="complete-cart", fix="add that static method")


def test_unannotated_and_loosely_annotated_functions_are_accepted() -> None:
    def untyped(ctx):  # type: ignore[no-untyped-def]
        return None

    def loose(ctx: StepContext[Any, Any]) -> Any:
        return None

    class CompleteCart(Saga[CartInput, CartData]):
        name = "complete-cart"
        new = State(initial=True)
        checked = State()
        done = State(final=True)
        check = new.to(checked).run(untyped, read_only=True)
        finish = checked.to(done).run(loose, read_only=True)

    assert list(CompleteCart.definition.transitions) == ["check", "finish"]


def test_a_transition_on_an_event_takes_its_name_and_payload_type() -> None:
    class CompleteCart(Saga[CartInput, CartData]):
        name = "complete-cart"
        payment_succeeded = Event[PaymentConfirmed]()
        expired = Event("cart_expired")
        new = State(initial=True)
        waiting = State()
        done = State(final=True)
        reserve = new.to(waiting).run(reserve_inventory, undo=release_inventory)
        paid = waiting.to(done).on(payment_succeeded)
        gave_up = waiting.to(done).on(expired)

    transitions = CompleteCart.definition.transitions
    assert transitions["paid"].event == "payment_succeeded"
    assert transitions["paid"].payload_type is PaymentConfirmed
    assert (transitions["gave_up"].event, transitions["gave_up"].payload_type) == (
        "cart_expired",
        None,
    )
    assert event_name(CompleteCart.payment_succeeded) == "payment_succeeded"


def test_an_event_with_its_own_payload_type_takes_no_other() -> None:
    with pytest.raises(DefinitionError, match="drop the payload argument"):
        State().to(State()).on(Event[PaymentConfirmed]("paid"), payload=PaymentConfirmed)
