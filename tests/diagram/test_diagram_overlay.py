"""The instance overlay marks, on the model, what a stored run did."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest
from checkout_runs import open_shop

from definitions.checkout.saga import CompleteCart
from statesaga import Engine, NonRetryableError, Retry, Saga, State, StepContext
from statesaga.diagram import DiagramError, Edge, Mode, Node, Trace, from_definition, overlay
from statesaga.testing import FakeClock

CHECKOUT = from_definition(CompleteCart)
DECLINED = "the card was declined for 25.00 EUR: ask the customer for another payment method"


def traced(items: Iterable[Node | Edge]) -> dict[str, Trace]:
    return {item.id: item.trace for item in items if item.trace is not None}


def test_a_completed_checkout_shows_its_whole_path(tmp_path: Path) -> None:
    with open_shop(f"sqlite:///{tmp_path / 'shop.db'}") as checkouts:
        run = checkouts.complete("card_ok")
    drawn = overlay(CHECKOUT, run)
    assert drawn.mode is Mode.INSTANCE
    assert traced(drawn.edges) == dict.fromkeys(
        ("validate", "reserve", "authorize", "approved", "order", "complete"), Trace.TAKEN
    )
    nodes = traced(drawn.nodes)
    assert nodes.pop("completed") is Trace.CURRENT
    assert set(nodes.values()) == {Trace.VISITED}
    assert "awaiting_payment" not in nodes
    assert drawn.node("completed").notes == ("now: completed",)
    assert drawn.title == f"complete-cart v1 \u00b7 run {run.id}"
    assert drawn.notes == ("completed in state completed",)


def test_a_declined_payment_shows_the_failed_step_and_the_compensations_that_ran() -> None:
    with open_shop() as checkouts:
        run = checkouts.complete("card_declined")
    drawn = overlay(CHECKOUT, run)
    assert traced(drawn.edges) == {
        "validate": Trace.TAKEN,
        "reserve": Trace.TAKEN,
        "authorize": Trace.FAILED,
        "authorize.undo": Trace.TAKEN,  # undo_on_failure: the failed try is undone too
        "reserve.undo": Trace.TAKEN,
        "validated.compensated": Trace.TAKEN,
    }
    assert drawn.edge("authorize").notes == (
        "failed on try 1 (PaymentDeclined)",
        "the card was declined for 25.00 EUR: ask the customer for...",  # shortened
    )
    assert drawn.node("(compensated)").trace is Trace.CURRENT
    assert drawn.node("authorizing").trace is None
    assert "(failed)" not in {node.id for node in drawn.nodes}  # nothing leads there
    assert drawn.notes == ("compensated in state validated", f"PaymentDeclined: {DECLINED}")


def test_a_waiting_run_is_current_in_its_waiting_state_then_moves_on_its_event() -> None:
    with open_shop() as checkouts:
        started = checkouts.complete("card_3ds")
        waiting = overlay(CHECKOUT, started)
        done = overlay(CHECKOUT, checkouts.webhook(started, succeeded=True))
    assert waiting.node("awaiting_payment").trace is Trace.CURRENT
    assert waiting.node("awaiting_payment").notes == ("now: waiting",)
    assert waiting.edge("needs_action").trace is Trace.TAKEN
    assert waiting.edge("approved").trace is None
    assert waiting.edge("paid").trace is None
    assert done.edge("paid").trace is Trace.TAKEN
    assert done.edge("approved").trace is None
    assert done.node("awaiting_payment").trace is Trace.VISITED
    assert done.node("completed").trace is Trace.CURRENT


def test_a_wait_that_times_out_shows_the_timeout_path() -> None:
    clock = FakeClock()
    with open_shop(clock=clock) as checkouts:
        started = checkouts.complete("card_3ds")
        clock.advance(50)  # past the 45 s wait for the webhook, within the 60 s deadline
        checkouts.shop.engine.recover()
        drawn = overlay(CHECKOUT, checkouts.get(started.id))
    assert drawn.edge("awaiting_payment.timeout").trace is Trace.TAKEN
    assert drawn.edge("authorize.undo").trace is Trace.TAKEN
    assert drawn.edge("reserve.undo").trace is Trace.TAKEN
    assert drawn.node("(compensated)").trace is Trace.CURRENT
    assert "WaitTimedOut" in drawn.notes[-1]


def test_a_cancelled_run_says_where_it_was_cancelled() -> None:
    with open_shop() as checkouts:
        started = checkouts.complete("card_3ds")
        checkouts.shop.engine.cancel(started.id, reason="customer left")
        drawn = overlay(CHECKOUT, checkouts.get(started.id))
    assert "cancelled here" in drawn.node("awaiting_payment").notes
    assert drawn.node("(compensated)").trace is Trace.CURRENT


def test_a_failed_3ds_confirmation_cancels_from_the_wait() -> None:
    with open_shop() as checkouts:
        started = checkouts.complete("card_3ds")
        drawn = overlay(CHECKOUT, checkouts.webhook(started, succeeded=False))
    assert "cancelled here" in drawn.node("awaiting_payment").notes
    assert drawn.edge("paid").trace is None
    assert drawn.edge("authorize.undo").trace is Trace.TAKEN
    assert drawn.node("(compensated)").trace is Trace.CURRENT


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    tries: int = 0


Ctx = StepContext[In, Data]
FLAKY: list[int] = []


class Stuck(NonRetryableError):
    pass


def hold(ctx: Ctx) -> Data:
    return ctx.data


def let_go(ctx: Ctx) -> None:
    raise Stuck("the warehouse is offline")


def flaky(ctx: Ctx) -> Data:
    FLAKY.append(1)
    if len(FLAKY) == 1:
        raise RuntimeError("try again")
    return ctx.data


def refuse(ctx: Ctx) -> None:
    raise Stuck("no")


class Jammed(Saga[In, Data]):
    name = "jammed"
    new = State(initial=True)
    held = State()
    tried = State()
    done = State(final=True)
    hold_it = new.to(held).run(
        hold, undo=let_go, undo_retry=Retry(attempts=2, initial_interval=0.001)
    )
    try_it = held.to(tried).run(flaky, read_only=True, retry=Retry(initial_interval=0.001))
    finish = tried.to(done).run(refuse, read_only=True)


def test_a_compensation_that_keeps_failing_leaves_the_run_failed() -> None:
    FLAKY.clear()
    with Engine("sqlite://") as engine:
        run = engine.get(engine.start(Jammed, {}).id)
    drawn = overlay(from_definition(Jammed), run)
    assert run.status.value == "failed"
    assert drawn.edge("try_it").trace is Trace.TAKEN
    assert drawn.edge("try_it").notes == ("retried 1\u00d7",)
    assert drawn.edge("finish").trace is Trace.FAILED
    assert drawn.edge("hold_it.undo").trace is Trace.FAILED
    assert drawn.edge("hold_it.undo").notes[0] == "failed on try 1 (Stuck)"
    # the definition draws no way into failed; the overlay draws the one this run took
    assert drawn.node("(failed)").trace is Trace.CURRENT
    assert drawn.node("(failed)").summary == "an undo kept failing"
    assert drawn.edge("tried.failed").trace is Trace.TAKEN
    assert drawn.node("(compensated)").trace is None


def test_a_run_of_another_saga_or_graph_is_refused() -> None:
    FLAKY.clear()
    with Engine("sqlite://") as engine:
        run = engine.get(engine.start(Jammed, {}).id)
    with pytest.raises(DiagramError, match="a run of saga 'jammed', not 'complete-cart'"):
        overlay(CHECKOUT, run)
    renamed = attrs.evolve(run, saga="complete-cart", version=2)
    with pytest.raises(DiagramError, match="draw the run on version 2"):
        overlay(CHECKOUT, renamed)
