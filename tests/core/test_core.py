"""The interpreter, by example.

``Interpreter`` is pure: given a snapshot and what just happened (an
``Outcome``), it returns the next snapshot, the history records to persist
with it, and what to do next (a ``Decision``). These tests play the driver's
part by hand, one outcome at a time, so each reads as a run's story.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from definitions.checkout import (
    CompleteCart,
    CompleteCartInput,
    PaymentConfirmed,
    PaymentDeclined,
)
from statesaga import (
    CancelNotAllowed,
    ErrorInfo,
    ErrorKind,
    EventNotAllowed,
    HistoryKind,
    InvalidOperation,
    Retry,
    RetryNotAllowed,
    Saga,
    State,
    Status,
    StepContext,
)
from statesaga.core import (
    BranchChosen,
    CancelRequested,
    ChooseBranch,
    CompensationFailed,
    CompensationSucceeded,
    Done,
    EventArrived,
    Finish,
    Interpreter,
    Next,
    Record,
    RetryRequested,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    StepFailed,
    StepSucceeded,
    Wait,
)
from statesaga.definition import Definition

# -- a linear saga: validate, reserve, charge, ship (the pivot), notify ------------------


@attrs.frozen
class OrderInput:
    order_id: str = "order-7"
    express: bool = False


@attrs.frozen
class OrderData:
    progress: tuple[str, ...] = ()


def did(data: Any, what: str) -> OrderData:
    return OrderData((*data.progress, what))


def validate_order(ctx: StepContext[OrderInput, OrderData]) -> None:
    return None


def reserve_stock(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "reserved")


def release_stock(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "released")


def charge_card(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "charged")


def refund_card(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "refunded")


def ship_parcel(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "shipped")


def email_customer(ctx: StepContext[OrderInput, OrderData]) -> None:
    return None


class PlaceOrder(Saga[OrderInput, OrderData]):
    name = "place-order"

    new = State(initial=True)
    validated = State()
    reserved = State()
    charged = State()
    shipped = State()
    notified = State(final=True)

    validate = new.to(validated).run(validate_order, read_only=True)
    reserve = validated.to(reserved).run(reserve_stock, undo=release_stock)
    charge = reserved.to(charged).run(
        charge_card,
        undo=refund_card,
        retry=Retry(attempts=3, initial_interval=2, backoff=3, jitter=0.5),
        undo_retry=Retry(attempts=2, initial_interval=10, jitter=0),
        timeout=30,
    )
    ship = charged.to(shipped).run(ship_parcel, pivot=True)
    notify = shipped.to(notified).run(email_customer)  # after the pivot: never compensated


ID = "order-7"
TRANSIENT = ErrorInfo("ConnectionError", "payment provider unreachable")
PERMANENT = ErrorInfo("PaymentDeclined", "card declined", retryable=False)


def begin(
    saga: type[Saga[Any, Any]] = PlaceOrder,
    *,
    now: float = 0.0,
    deadline: float | None = None,
    rand: Callable[[], float] = lambda: 0.5,
) -> tuple[Interpreter, Next]:
    """An interpreter (with jitter pinned to its midpoint) and a freshly started instance."""
    definition: Definition = saga.definition
    core = Interpreter(definition, rand=rand)
    saga_input = definition.input_type()
    data = definition.make_initial_context(saga_input)
    return core, core.start(ID, saga_input, data, now=now, deadline=deadline)


def succeed(core: Interpreter, current: Next, *, now: float = 0.0, times: int = 1) -> Next:
    """Report ``times`` pending steps in a row as succeeded, each recording its own name."""
    for _ in range(times):
        decision = current.decision
        assert isinstance(decision, RunStep), f"expected a step to run, got {decision}"
        data = did(current.snapshot.data, decision.transition)
        current = core.next(current.snapshot, StepSucceeded(data), now)
    return current


def compensate(core: Interpreter, current: Next, *, now: float = 0.0) -> list[str]:
    """Report every compensation asked for as succeeded; the order they were asked in."""
    undone = []
    while isinstance(current.decision, RunCompensation):
        undone.append(current.decision.transition)
        current = core.next(current.snapshot, CompensationSucceeded(), now)
    assert current.decision == Finish(Status.COMPENSATED)
    return undone


def kinds(current: Next) -> list[HistoryKind]:
    return [record.kind for record in current.records]


# -- the forward path -------------------------------------------------------------------


def test_a_run_starts_in_the_initial_state_and_asks_for_the_first_step() -> None:
    _, start = begin()

    assert start.snapshot.state == "new"
    assert start.snapshot.status is Status.RUNNING
    assert start.records == (Record(HistoryKind.START, "new", "new"),)
    assert start.decision == RunStep("validate", 1, f"{ID}:0:validate", timeout=None)


def test_a_linear_saga_runs_each_step_once_in_order_and_completes() -> None:
    core, current = begin()
    asked: list[RunStep] = []
    records: list[Record] = []

    while isinstance(current.decision, RunStep):
        asked.append(current.decision)
        current = succeed(core, current, now=float(len(asked)))
        records.extend(current.records)

    assert [(step.transition, step.idempotency_key) for step in asked] == [
        ("validate", f"{ID}:0:validate"),
        ("reserve", f"{ID}:1:reserve"),
        ("charge", f"{ID}:2:charge"),
        ("ship", f"{ID}:3:ship"),
        ("notify", f"{ID}:4:notify"),
    ]
    assert asked[2].timeout == 30.0  # the step's own timeout travels with the decision
    assert records == [
        Record(HistoryKind.FORWARD, "new", "validated", "validate", attempt=1),
        Record(HistoryKind.FORWARD, "validated", "reserved", "reserve", attempt=1),
        Record(HistoryKind.FORWARD, "reserved", "charged", "charge", attempt=1),
        Record(HistoryKind.FORWARD, "charged", "shipped", "ship", attempt=1),
        Record(HistoryKind.FORWARD, "shipped", "notified", "notify", attempt=1),
    ]
    assert current.decision == Finish(Status.COMPLETED)
    assert current.snapshot.state == "notified"
    assert current.snapshot.seq == 5
    assert current.snapshot.data == OrderData(("validate", "reserve", "charge", "ship", "notify"))


def test_completed_compensatable_steps_are_stacked_until_the_pivot_clears_them() -> None:
    core, current = begin()

    current = succeed(core, current, times=3)  # validate, reserve, charge
    assert [done.transition for done in current.snapshot.stack] == ["reserve", "charge"]
    assert not current.snapshot.pivoted

    current = succeed(core, current)  # ship, the pivot
    assert current.snapshot.stack == ()
    assert current.snapshot.pivoted


def test_reporting_on_a_step_that_is_not_pending_is_refused() -> None:
    core, current = begin()
    done = succeed(core, current, times=5)

    with pytest.raises(InvalidOperation, match="has no pending step"):
        core.next(done.snapshot, StepSucceeded(OrderData()), 0.0)
    with pytest.raises(InvalidOperation, match="is not compensating"):
        core.next(current.snapshot, CompensationSucceeded(), 0.0)
    with pytest.raises(InvalidOperation, match="is not choosing a branch"):
        core.next(current.snapshot, BranchChosen("validate"), 0.0)


# -- retries ----------------------------------------------------------------------------


def test_a_transient_failure_is_retried_after_a_backoff_under_the_same_key() -> None:
    core, current = begin()  # rand() == 0.5: the jitter adds nothing
    current = succeed(core, current, times=2, now=100.0)
    first_try = current.decision
    assert first_try == RunStep("charge", 1, f"{ID}:2:charge", timeout=30.0)

    current = core.next(current.snapshot, StepFailed(TRANSIENT), 100.0)

    assert current.records == (
        Record(
            HistoryKind.RETRY,
            "reserved",
            "reserved",
            "charge",
            attempt=1,
            error=attrs.evolve(TRANSIENT, step="charge"),
        ),
    )
    assert current.decision == Sleep(until=102.0)  # initial_interval=2
    assert current.snapshot.status is Status.RUNNING

    too_early = core.decide(current.snapshot, 101.0)
    assert too_early.decision == Sleep(until=102.0)
    assert too_early.records == ()

    second_try = core.decide(current.snapshot, 102.0).decision
    assert second_try == RunStep("charge", 2, f"{ID}:2:charge", timeout=30.0)

    current = core.next(current.snapshot, StepFailed(TRANSIENT), 102.0)
    assert current.decision == Sleep(until=108.0)  # 2 * backoff 3
    third_try = core.decide(current.snapshot, 108.0)
    assert third_try.decision == RunStep("charge", 3, f"{ID}:2:charge", timeout=30.0)

    current = succeed(core, third_try, now=109.0)
    assert current.records[0] == Record(
        HistoryKind.FORWARD, "reserved", "charged", "charge", attempt=3
    )


@pytest.mark.parametrize(("rand", "delay"), [(0.0, 1.0), (0.5, 2.0), (0.75, 2.5)])
def test_jitter_spreads_the_backoff_either_way(rand: float, delay: float) -> None:
    core, current = begin(rand=lambda: rand)  # charge: initial_interval=2, jitter=0.5
    current = succeed(core, current, times=2)

    current = core.next(current.snapshot, StepFailed(TRANSIENT), 10.0)

    assert current.decision == Sleep(until=10.0 + delay)


def test_business_errors_and_listed_exception_types_are_not_retried() -> None:
    policy = Retry(non_retryable=(KeyError, PermissionError))

    assert not policy.is_retryable(PaymentDeclined("card declined"))  # a NonRetryableError
    assert not policy.is_retryable(KeyError("sku-unknown"))
    assert policy.is_retryable(ConnectionError("provider unreachable"))
    assert not Retry(non_retryable=TimeoutError).is_retryable(TimeoutError())
    assert Retry().is_retryable(TimeoutError())


def test_a_step_that_keeps_failing_compensates_what_completed_before_it() -> None:
    core, current = begin()
    current = succeed(core, current, times=2)
    for attempt in (1, 2):
        current = core.next(current.snapshot, StepFailed(TRANSIENT), 0.0)
        current = core.decide(current.snapshot, 1000.0 * attempt)
        assert current.decision == RunStep("charge", attempt + 1, f"{ID}:2:charge", 30.0)

    current = core.next(current.snapshot, StepFailed(TRANSIENT), 3000.0)

    assert kinds(current) == [HistoryKind.FAILURE]
    assert current.records[0].attempt == 3
    assert current.snapshot.status is Status.COMPENSATING
    assert current.snapshot.error == attrs.evolve(TRANSIENT, step="charge")
    assert current.decision == RunCompensation("reserve", 1, f"{ID}:1:reserve:undo", None)
    assert compensate(core, current) == ["reserve"]


def test_a_non_retryable_failure_compensates_at_once() -> None:
    core, current = begin()
    current = succeed(core, current, times=2)

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)

    assert current.records == (
        Record(
            HistoryKind.FAILURE,
            "reserved",
            "reserved",
            "charge",
            attempt=1,
            error=attrs.evolve(PERMANENT, step="charge"),
        ),
    )
    assert current.snapshot.status is Status.COMPENSATING
    assert isinstance(current.decision, RunCompensation)
    assert current.decision.transition == "reserve"


# -- compensation -----------------------------------------------------------------------


def test_compensations_run_in_reverse_order_each_exactly_once() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)  # validate (read-only), reserve, charge

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)  # ship, the pivot, fails
    asked = []
    history = list(current.records)
    while isinstance(current.decision, RunCompensation):
        asked.append(current.decision)
        current = core.next(current.snapshot, CompensationSucceeded(), 0.0)
        history.extend(current.records)

    assert asked == [
        RunCompensation("charge", 1, f"{ID}:2:charge:undo", 30.0),
        RunCompensation("reserve", 1, f"{ID}:1:reserve:undo", None),
    ]
    # each compensation walks the saga back over its own transition
    assert [(r.kind, r.from_state, r.to_state, r.transition) for r in history] == [
        (HistoryKind.FAILURE, "charged", "charged", "ship"),
        (HistoryKind.COMPENSATE, "charged", "reserved", "charge"),
        (HistoryKind.COMPENSATE, "reserved", "validated", "reserve"),
    ]
    assert current.decision == Finish(Status.COMPENSATED)
    assert current.snapshot.status is Status.COMPENSATED
    assert current.snapshot.stack == ()
    assert current.snapshot.error == attrs.evolve(PERMANENT, step="ship")


def test_a_compensation_that_keeps_failing_leaves_the_run_failed_with_its_error() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)
    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)
    undo_error = ErrorInfo("RefundRejected", "provider is down")

    current = core.next(current.snapshot, CompensationFailed(undo_error), 50.0)
    assert current.records == (
        Record(
            HistoryKind.COMPENSATION_RETRY,
            "charged",
            "charged",
            "charge",
            attempt=1,
            error=attrs.evolve(undo_error, step="charge.undo"),
        ),
    )
    assert current.decision == Sleep(until=60.0)  # undo_retry: initial_interval=10, no jitter
    current = core.decide(current.snapshot, 60.0)
    assert current.decision == RunCompensation("charge", 2, f"{ID}:2:charge:undo", 30.0)

    current = core.next(current.snapshot, CompensationFailed(undo_error), 61.0)

    assert kinds(current) == [HistoryKind.FAILURE]
    assert current.decision == Finish(Status.FAILED)
    assert current.snapshot.status is Status.FAILED
    assert current.snapshot.error == attrs.evolve(undo_error, step="charge.undo")
    # nothing is dropped: both compensations are still owed
    assert [done.transition for done in current.snapshot.stack] == ["reserve", "charge"]


def test_a_non_retryable_compensation_error_fails_at_once() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)
    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)

    current = core.next(current.snapshot, CompensationFailed(PERMANENT), 0.0)

    assert current.decision == Finish(Status.FAILED)


def test_retrying_a_failed_run_resumes_its_compensation() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)
    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)
    undo_error = ErrorInfo("RefundRejected", "provider is down", retryable=False)
    failed = core.next(current.snapshot, CompensationFailed(undo_error), 0.0)

    resumed = core.next(failed.snapshot, RetryRequested(), 500.0)

    assert resumed.records == (Record(HistoryKind.RESUME, "charged", "charged"),)
    assert resumed.snapshot.status is Status.COMPENSATING
    assert resumed.decision == RunCompensation("charge", 1, f"{ID}:2:charge:undo", 30.0)
    assert compensate(core, resumed) == ["charge", "reserve"]


@pytest.mark.parametrize("status", ["running", "completed", "compensated"])
def test_only_a_failed_run_can_be_retried(status: str) -> None:
    core, current = begin()
    if status == "completed":
        current = succeed(core, current, times=5)
    elif status == "compensated":
        current = core.next(current.snapshot, CancelRequested(), 0.0)
    assert current.snapshot.status == status

    with pytest.raises(RetryNotAllowed, match="only a failed instance can be retried"):
        core.next(current.snapshot, RetryRequested(), 0.0)


# -- the pivot --------------------------------------------------------------------------


def test_a_failure_after_the_pivot_fails_the_run_without_compensating() -> None:
    core, current = begin()
    current = succeed(core, current, times=4)  # ... ship, the pivot

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)  # notify

    assert kinds(current) == [HistoryKind.FAILURE]
    assert current.decision == Finish(Status.FAILED)
    assert current.snapshot.status is Status.FAILED
    assert current.snapshot.pending == "notify"  # kept, so a retry can run it again


def test_retrying_after_the_pivot_runs_the_failed_step_again() -> None:
    core, current = begin()
    current = succeed(core, current, times=4)
    failed = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)

    resumed = core.next(failed.snapshot, RetryRequested(), 10.0)

    assert resumed.records == (Record(HistoryKind.RESUME, "shipped", "shipped", "notify"),)
    assert resumed.decision == RunStep("notify", 1, f"{ID}:4:notify", None, completes=True)
    assert succeed(core, resumed).decision == Finish(Status.COMPLETED)


def test_a_run_past_its_pivot_cannot_be_cancelled() -> None:
    core, current = begin()
    current = succeed(core, current, times=4)

    with pytest.raises(CancelNotAllowed, match="has passed its pivot and only goes forward"):
        core.next(current.snapshot, CancelRequested(), 0.0)


def test_the_deadline_no_longer_applies_once_the_pivot_ran() -> None:
    core, current = begin(deadline=60.0)
    current = succeed(core, current, times=4, now=10.0)

    late = core.decide(current.snapshot, 3600.0)
    assert late.decision == RunStep("notify", 1, f"{ID}:4:notify", None, completes=True)
    assert late.records == ()
    assert succeed(core, late, now=3600.0).decision == Finish(Status.COMPLETED)


def test_a_failing_pivot_step_compensates_what_came_before_it() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)  # ship

    assert not current.snapshot.pivoted
    assert compensate(core, current) == ["charge", "reserve"]


# -- deadline and cancel ----------------------------------------------------------------


def test_a_passed_deadline_compensates_with_a_deadline_record() -> None:
    core, current = begin(deadline=60.0)
    current = succeed(core, current, times=2, now=30.0)  # validate, reserve

    # charge succeeds, but only after the deadline: it is compensated too
    current = succeed(core, current, now=61.0)

    assert kinds(current) == [HistoryKind.FORWARD, HistoryKind.DEADLINE]
    deadline = current.records[1]
    assert deadline.error == ErrorInfo(
        "DeadlinePassed", "the run deadline passed", False, kind=ErrorKind.DEADLINE
    )
    assert current.snapshot.status is Status.COMPENSATING
    assert compensate(core, current) == ["charge", "reserve"]


def test_a_deadline_that_passes_during_a_backoff_compensates() -> None:
    core, current = begin(deadline=60.0)
    current = succeed(core, current, times=2)
    current = core.next(current.snapshot, StepFailed(TRANSIENT), 59.0)
    assert current.decision == Sleep(until=61.0)

    current = core.decide(current.snapshot, 61.0)

    assert kinds(current) == [HistoryKind.DEADLINE]
    assert compensate(core, current) == ["reserve"]


def test_cancelling_a_run_compensates_with_a_cancel_record() -> None:
    core, current = begin()
    current = succeed(core, current, times=3)

    current = core.next(current.snapshot, CancelRequested("customer changed their mind"), 0.0)

    assert current.records == (
        Record(
            HistoryKind.CANCEL,
            "charged",
            "charged",
            "ship",
            error=ErrorInfo(
                "Cancelled",
                "customer changed their mind",
                retryable=False,
                kind=ErrorKind.CANCELLED,
            ),
        ),
    )
    assert compensate(core, current) == ["charge", "reserve"]


def test_a_cancelled_run_that_had_done_nothing_is_compensated_at_once() -> None:
    core, current = begin()

    current = core.next(current.snapshot, CancelRequested(), 0.0)

    assert current.decision == Finish(Status.COMPENSATED)


@pytest.mark.parametrize("status", ["compensating", "completed"])
def test_a_run_that_is_compensating_or_terminal_cannot_be_cancelled(status: str) -> None:
    core, current = begin()
    current = succeed(core, current, times=2)
    if status == "compensating":
        current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)
    else:
        current = succeed(core, current, times=3)

    with pytest.raises(CancelNotAllowed, match=f"it is {status}"):
        core.next(current.snapshot, CancelRequested(), 0.0)


# -- undo_on_failure --------------------------------------------------------------------


class ChargeWithUnknownOutcome(Saga[OrderInput, OrderData]):
    """A charge whose failure may hide a partial effect: its refund runs too."""

    name = "charge-unknown-outcome"
    new = State(initial=True)
    reserved = State()
    charged = State()
    shipped = State(final=True)
    reserve = new.to(reserved).run(reserve_stock, undo=release_stock)
    charge = reserved.to(charged).run(charge_card, undo=refund_card, undo_on_failure=True)
    ship = charged.to(shipped).run(ship_parcel, pivot=True)


def test_undo_on_failure_compensates_the_failed_step_itself_first() -> None:
    core, current = begin(ChargeWithUnknownOutcome)
    current = succeed(core, current)  # reserve
    charge_key = f"{ID}:1:charge"
    assert current.decision == RunStep("charge", 1, charge_key, None)

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)

    # the refund runs under the failed charge's key, so the provider can match them
    assert current.decision == RunCompensation("charge", 1, f"{charge_key}:undo", None)
    assert compensate(core, current) == ["charge", "reserve"]


@pytest.mark.parametrize("interruption", ["deadline", "cancel"])
def test_an_undo_on_failure_step_interrupted_during_its_backoff_is_undone_too(
    interruption: str,
) -> None:
    # the charge timed out: it may have gone through. Before its retry, the run is
    # stopped; the refund must still run, or the customer stays charged.
    core, current = begin(ChargeWithUnknownOutcome, deadline=60.0)
    current = succeed(core, current)  # reserve
    timed_out = ErrorInfo("StepTimeout", "charge took longer than 10 s")
    current = core.next(current.snapshot, StepFailed(timed_out), 50.0)
    assert current.decision == Sleep(until=51.0)

    if interruption == "deadline":
        current = core.decide(current.snapshot, 60.0)
    else:
        current = core.next(current.snapshot, CancelRequested(), 50.5)

    assert current.decision == RunCompensation("charge", 1, f"{ID}:1:charge:undo", None)
    assert compensate(core, current) == ["charge", "reserve"]


def test_a_pending_undo_on_failure_step_is_undone_on_cancel_as_it_may_have_run() -> None:
    core, current = begin(ChargeWithUnknownOutcome)
    current = succeed(core, current)  # reserve; the charge is pending
    # the interpreter cannot tell a charge never tried from one that ran before a crash no
    # record shows: its compensation tolerates an effect that never happened, so it runs

    current = core.next(current.snapshot, CancelRequested(), 0.0)

    assert compensate(core, current) == ["charge", "reserve"]


def test_without_undo_on_failure_a_failed_step_is_not_compensated() -> None:
    core, current = begin()
    current = succeed(core, current, times=2)

    current = core.next(current.snapshot, StepFailed(PERMANENT), 0.0)  # charge

    assert compensate(core, current) == ["reserve"]


# -- guards -----------------------------------------------------------------------------


def is_express(ctx: StepContext[OrderInput, OrderData]) -> bool:
    return ctx.input.express


def is_bulky(ctx: StepContext[OrderInput, OrderData]) -> bool:
    return False


def book_courier(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "courier")


def post_parcel(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "post")


class Dispatch(Saga[OrderInput, OrderData]):
    """Express orders go by courier, bulky ones by freight; nothing else is allowed."""

    name = "dispatch"
    new = State(initial=True)
    packed = State()
    by_courier = State(final=True)
    by_freight = State(final=True)

    pack = new.to(packed).run(reserve_stock, undo=release_stock)
    courier = packed.to(by_courier).when(is_express).run(book_courier, pivot=True)
    freight = packed.to(by_freight).when(is_bulky).run(post_parcel, pivot=True)


def test_guards_are_evaluated_by_the_driver_which_reports_the_branch_chosen() -> None:
    core, current = begin(Dispatch)
    current = succeed(core, current)  # pack

    assert current.decision == ChooseBranch(("courier", "freight"))
    assert current.snapshot.pending is None

    current = core.next(current.snapshot, BranchChosen("freight"), 0.0)

    assert current.decision == RunStep("freight", 1, f"{ID}:1:freight", None, completes=True)
    assert succeed(core, current).snapshot.state == "by_freight"


def test_a_branch_that_does_not_leave_the_state_is_refused() -> None:
    core, current = begin(Dispatch)
    current = succeed(core, current)

    with pytest.raises(InvalidOperation, match="transition 'pack' does not leave state 'packed'"):
        core.next(current.snapshot, BranchChosen("pack"), 0.0)


def test_when_no_guard_passes_and_no_event_can_come_the_saga_compensates() -> None:
    core, current = begin(Dispatch)
    current = succeed(core, current)

    current = core.next(current.snapshot, BranchChosen(None), 0.0)

    assert kinds(current) == [HistoryKind.FAILURE]
    assert current.snapshot.error is not None
    assert current.snapshot.error.type == "NoTransitionAllowed"
    assert compensate(core, current) == ["pack"]


def test_the_unguarded_transition_is_the_fallback_offered_last() -> None:
    class Ship(Saga[OrderInput, OrderData]):
        name = "ship"
        new = State(initial=True)
        packed = State()
        sent = State(final=True)
        pack = new.to(packed).run(reserve_stock, undo=release_stock)
        by_post = packed.to(sent).run(post_parcel, pivot=True)  # declared first, offered last
        by_courier = packed.to(sent).when(is_express).run(book_courier, pivot=True)

    core, current = begin(Ship)
    current = succeed(core, current)

    assert current.decision == ChooseBranch(("by_courier", "by_post"))


# -- waiting for events -----------------------------------------------------------------


@attrs.frozen
class Payment:
    payment_id: str


def hold_table(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "held")


def release_table(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "released")


def record_payment(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, f"paid {ctx.event.payment_id}")


def confirm_booking(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
    return did(ctx.data, "confirmed")


class BookTable(Saga[OrderInput, OrderData]):
    """Hold a table, wait up to 15 minutes for the deposit, then confirm."""

    name = "book-table"
    new = State(initial=True)
    awaiting_deposit = State(timeout=900)
    paid = State()
    booked = State(final=True)

    hold = new.to(awaiting_deposit).run(hold_table, undo=release_table)
    deposit = (
        awaiting_deposit.to(paid)
        .on("deposit_received", payload=Payment)
        .run(record_payment, read_only=True)
    )
    waived = awaiting_deposit.to(paid).on("deposit_waived")
    confirm = paid.to(booked).run(confirm_booking, pivot=True)


class BookTableOnTrust(BookTable):
    """The same, but when no deposit comes the table is booked anyway."""

    name = "book-table-on-trust"
    trust = BookTable.awaiting_deposit.to(BookTable.paid).on_timeout()


def test_a_waiting_state_asks_to_wait_for_its_events_until_its_timeout() -> None:
    core, current = begin(BookTable, now=100.0)

    current = succeed(core, current, now=100.0)  # hold

    assert current.records == (
        Record(HistoryKind.FORWARD, "new", "awaiting_deposit", "hold", attempt=1),
    )
    assert current.snapshot.status is Status.WAITING
    assert current.decision == Wait(("deposit_received", "deposit_waived"), until=1000.0)
    assert core.decide(current.snapshot, 999.0) == Next(current.snapshot, current.decision)


def test_the_wait_ends_at_the_deadline_when_that_comes_first() -> None:
    core, current = begin(BookTable, deadline=300.0)

    current = succeed(core, current)

    assert current.decision == Wait(("deposit_received", "deposit_waived"), until=300.0)


def test_an_event_with_a_step_runs_it_with_the_payload() -> None:
    core, current = begin(BookTable)
    current = succeed(core, current)

    current = core.next(current.snapshot, EventArrived("deposit_received", Payment("p-1")), 5.0)

    assert current.decision == RunStep("deposit", 1, f"{ID}:1:deposit", None)
    assert current.snapshot.event == Payment("p-1")  # the step reads it as ctx.event
    current = succeed(core, current, now=6.0)
    assert current.records == (
        Record(
            HistoryKind.EVENT,
            "awaiting_deposit",
            "paid",
            "deposit",
            attempt=1,
            event="deposit_received",
        ),
    )
    assert current.decision == RunStep("confirm", 1, f"{ID}:2:confirm", None, completes=True)
    assert current.snapshot.event is None


def test_an_event_without_a_step_moves_on_at_once() -> None:
    core, current = begin(BookTable)
    current = succeed(core, current)

    current = core.next(current.snapshot, EventArrived("deposit_waived"), 5.0)

    assert current.records == (
        Record(HistoryKind.EVENT, "awaiting_deposit", "paid", "waived", event="deposit_waived"),
    )
    assert current.decision == RunStep("confirm", 1, f"{ID}:2:confirm", None, completes=True)


def test_an_event_the_state_does_not_accept_is_refused_with_the_ones_it_does() -> None:
    core, current = begin(BookTable)
    current = succeed(core, current)

    with pytest.raises(EventNotAllowed) as excinfo:
        core.next(current.snapshot, EventArrived("order_shipped"), 5.0)

    message = str(excinfo.value)
    assert "cannot take event 'order_shipped'" in message
    assert "it accepts deposit_received, deposit_waived" in message
    assert excinfo.value.state == "awaiting_deposit"
    assert excinfo.value.instance_id == ID


def test_an_event_sent_while_not_waiting_is_refused() -> None:
    core, start = begin(BookTable)

    with pytest.raises(EventNotAllowed, match="it is running, not waiting for events"):
        core.next(start.snapshot, EventArrived("deposit_received", Payment("p-1")), 0.0)


def test_a_wait_that_times_out_compensates() -> None:
    core, current = begin(BookTable)
    current = succeed(core, current)

    current = core.decide(current.snapshot, 900.0)

    assert kinds(current) == [HistoryKind.TIMEOUT]
    assert current.records[0].error == ErrorInfo(
        "WaitTimedOut",
        "no event arrived in state 'awaiting_deposit' in time",
        False,
        kind=ErrorKind.WAIT_TIMEOUT,
    )
    assert compensate(core, current) == ["hold"]


def test_a_wait_that_times_out_takes_the_on_timeout_transition_when_there_is_one() -> None:
    core, current = begin(BookTableOnTrust)
    current = succeed(core, current)

    current = core.decide(current.snapshot, 900.0)

    assert current.records == (Record(HistoryKind.TIMEOUT, "awaiting_deposit", "paid", "trust"),)
    assert current.decision == RunStep("confirm", 1, f"{ID}:2:confirm", None, completes=True)


def test_an_on_timeout_transition_with_a_step_runs_it() -> None:
    def send_reminder(ctx: StepContext[OrderInput, OrderData]) -> OrderData:
        return did(ctx.data, "reminded")

    class BookTableWithReminder(BookTable):
        name = "book-table-with-reminder"
        remind = (
            BookTable.awaiting_deposit.to(BookTable.paid)
            .on_timeout()
            .run(send_reminder, read_only=True)
        )

    core, current = begin(BookTableWithReminder)
    current = succeed(core, current)

    current = core.decide(current.snapshot, 900.0)
    assert current.decision == RunStep("remind", 1, f"{ID}:1:remind", None)

    current = succeed(core, current)
    assert current.records == (
        Record(HistoryKind.FORWARD, "awaiting_deposit", "paid", "remind", attempt=1),
    )


def test_a_waiting_run_can_be_cancelled() -> None:
    core, current = begin(BookTable)
    current = succeed(core, current)

    current = core.next(current.snapshot, CancelRequested("guest cancelled"), 10.0)

    assert kinds(current) == [HistoryKind.CANCEL]
    assert compensate(core, current) == ["hold"]


def test_a_state_with_guards_and_events_waits_when_no_guard_passes() -> None:
    def is_regular(ctx: StepContext[OrderInput, OrderData]) -> bool:
        return False

    class BookTableForRegulars(Saga[OrderInput, OrderData]):
        name = "book-table-regulars"
        new = State(initial=True)
        awaiting_deposit = State(timeout=600)
        paid = State()
        booked = State(final=True)
        hold = new.to(awaiting_deposit).run(hold_table, undo=release_table)
        regular = awaiting_deposit.to(paid).when(is_regular)
        deposit = awaiting_deposit.to(paid).on("deposit_received")
        confirm = paid.to(booked).run(confirm_booking, pivot=True)

    core, current = begin(BookTableForRegulars)
    current = succeed(core, current)
    assert current.decision == ChooseBranch(("regular",))

    current = core.next(current.snapshot, BranchChosen(None), 50.0)

    assert current.records == (Record(HistoryKind.WAIT, "awaiting_deposit", "awaiting_deposit"),)
    assert current.decision == Wait(("deposit_received",), until=650.0)


# -- the checkout's graph, driven with scripted step outcomes ---------------------------------
#
# The checkout's steps write to the shop's tables (tests/test_checkout.py runs them for
# real); here the interpreter alone decides the checkout's path from what each step,
# compensation and guard is said to return.


def drive(
    core: Interpreter,
    current: Next,
    *,
    now: float = 0.0,
    fail: dict[str, ErrorInfo] | None = None,
    requires_action: bool = False,
) -> tuple[Next, list[Record], list[str]]:
    """Play the engine's part until the checkout waits or finishes.

    Every step succeeds (recording what the real one would) unless ``fail`` names it;
    the ``needs_action`` guard answers ``requires_action``. Returns the last answer,
    every history record and the calls made (``step`` or ``step.undo``).
    """
    records = list(current.records)
    calls: list[str] = []
    fail = fail or {}
    for _ in range(100):
        decision = current.decision
        if isinstance(decision, RunStep):
            name = decision.transition
            calls.append(name)
            data = current.snapshot.data
            if name in fail:
                outcome: Any = StepFailed(fail[name])
            else:
                outcome = StepSucceeded(attrs.evolve(data, **SCRIPT.get(name, {})))
            current = core.next(current.snapshot, outcome, now)
        elif isinstance(decision, RunCompensation):
            calls.append(f"{decision.transition}.undo")
            current = core.next(current.snapshot, CompensationSucceeded(), now)
        elif isinstance(decision, ChooseBranch):
            chosen = "needs_action" if requires_action else decision.transitions[-1]
            assert chosen in decision.transitions
            current = core.next(current.snapshot, BranchChosen(chosen), now)
        elif isinstance(decision, Sleep):
            now = decision.until
            current = core.decide(current.snapshot, now)
        else:
            return current, records, calls
        records.extend(current.records)
    raise AssertionError("the saga did not settle in 100 moves")


# what each real step records in the checkout's context
SCRIPT: dict[str, dict[str, Any]] = {
    "validate": {"total": 9500, "currency": "EUR", "payment_method": "card_ok"},
    "authorize": {"provider_ref": "pi_1", "payment_status": "authorized"},
    "approved": {"payment_id": "pay-1", "payment_status": "authorized"},
    "paid": {"payment_id": "pay-1", "payment_status": "authorized"},
    "order": {"order_id": "ord-1"},
}
DECLINED = ErrorInfo("definitions.checkout.errors.PaymentDeclined", "declined", retryable=False)


def checkout() -> tuple[Interpreter, Next]:
    definition = CompleteCart.definition
    core = Interpreter(definition, rand=lambda: 0.5)
    cart = CompleteCartInput(cart_id="cart-42")
    start = core.start(
        "checkout-1", cart, definition.make_initial_context(cart), now=0.0, deadline=60.0
    )
    return core, start


def test_checkout_happy_path() -> None:
    core, start = checkout()

    last, records, calls = drive(core, start)

    assert calls == ["validate", "reserve", "authorize", "approved", "order", "complete"]
    assert [r.transition for r in records if r.kind is HistoryKind.FORWARD] == calls
    assert last.decision == Finish(Status.COMPLETED)
    receipt = CompleteCart.output(CompleteCartInput("cart-42"), last.snapshot.data)
    assert (receipt.order_id, receipt.total) == ("ord-1", 9500)


def test_checkout_waits_for_3d_secure_then_completes_on_payment_succeeded() -> None:
    core, start = checkout()

    waiting, _, calls = drive(core, start, now=1.0, requires_action=True)

    assert calls == ["validate", "reserve", "authorize"]
    assert waiting.snapshot.state == "awaiting_payment"
    # the webhook may take as long as the state's timeout, well within the run deadline
    timeout = CompleteCart.definition.states["awaiting_payment"].timeout
    assert timeout is not None
    assert 1.0 + timeout < 60.0
    assert waiting.decision == Wait(("payment_succeeded",), until=1.0 + timeout)

    confirmed = core.next(
        waiting.snapshot, EventArrived("payment_succeeded", PaymentConfirmed("pi_1")), 20.0
    )
    last, records, calls = drive(core, confirmed, now=20.0)

    assert calls == ["paid", "order", "complete"]
    assert records[0].kind is HistoryKind.EVENT
    assert records[0].event == "payment_succeeded"
    assert last.decision == Finish(Status.COMPLETED)


def test_checkout_waiting_past_its_timeout_cancels_the_payment_and_releases_the_stock() -> None:
    core, start = checkout()
    waiting, _, _ = drive(core, start, now=1.0, requires_action=True)

    expired = core.decide(waiting.snapshot, 46.0)
    last, records, calls = drive(core, expired, now=46.0)

    assert records[0].kind is HistoryKind.TIMEOUT
    assert calls == ["authorize.undo", "reserve.undo"]
    assert last.decision == Finish(Status.COMPENSATED)


def test_checkout_declined_payment_cancels_the_payment_and_releases_the_stock() -> None:
    core, start = checkout()

    last, records, calls = drive(core, start, fail={"authorize": DECLINED})

    # authorize has undo_on_failure: a declined payment is cancelled too, defensively
    assert calls == ["validate", "reserve", "authorize", "authorize.undo", "reserve.undo"]
    failure = next(r for r in records if r.kind is HistoryKind.FAILURE)
    assert failure.transition == "authorize"
    assert last.decision == Finish(Status.COMPENSATED)


def test_checkout_failing_to_complete_the_cart_undoes_everything_in_reverse() -> None:
    core, start = checkout()
    broken = ErrorInfo("RuntimeError", "disk full", retryable=False)

    last, _, calls = drive(core, start, fail={"complete": broken})

    assert calls[-5:] == [
        "complete",
        "order.undo",
        "approved.undo",
        "authorize.undo",
        "reserve.undo",
    ]
    assert last.decision == Finish(Status.COMPENSATED)


def test_checkout_of_an_invalid_cart_compensates_nothing() -> None:
    core, start = checkout()
    invalid = ErrorInfo("definitions.checkout.errors.InvalidCart", "empty", retryable=False)

    last, _, calls = drive(core, start, fail={"validate": invalid})

    assert calls == ["validate"]
    assert last.decision == Finish(Status.COMPENSATED)


def test_an_event_that_arrives_after_the_deadline_is_overtaken_by_it() -> None:
    from definitions.checkout import CheckoutData, CompleteCart

    core = Interpreter(CompleteCart.definition)
    snapshot = Snapshot(
        "late",
        "awaiting_payment",
        Status.WAITING,
        CheckoutData(),
        deadline=60.0,
        wake_at=45.0,
        stack=(Done("reserve", 1),),
        seq=4,
    )

    answer = core.next(snapshot, EventArrived("payment_succeeded", None), now=61.0)

    assert answer.snapshot.status is Status.COMPENSATING
    assert [r.kind for r in answer.records] == [HistoryKind.DEADLINE]
    assert answer.decision == RunCompensation("reserve", 1, "late:1:reserve:undo", None)
