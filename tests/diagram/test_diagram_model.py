"""The diagram model holds every part of a definition a reviewer needs to see."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest

from definitions.checkout.saga import CompleteCart
from statesaga import Saga, State, StepContext
from statesaga.diagram import (
    DiagramError,
    EdgeKind,
    NodeKind,
    Outcome,
    from_definition,
)
from statesaga.diagram.labels import duration, edge_lines, node_lines


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    n: int = 0


Ctx = StepContext[In, Data]


def reserve(ctx: Ctx) -> None: ...
def release(ctx: Ctx) -> None: ...
def charge(ctx: Ctx) -> None: ...
def ship(ctx: Ctx) -> None: ...
def notify(ctx: Ctx) -> None: ...
def expire(ctx: Ctx) -> None: ...
def approved(ctx: Ctx) -> bool:
    return True


class Shipping(Saga[In, Data]):
    """A saga with a pivot, a waiting state that times out into a transition, and a guard."""

    name = "shipping"
    version = 3
    new = State(initial=True)
    reserved = State()
    charged = State()
    waiting = State(timeout=90)
    shipped = State()
    expired = State(final=True)
    done = State(final=True)
    reserve = new.to(reserved).run(reserve, undo=release)
    charge = reserved.to(charged).run(charge, pivot=True)
    hold = charged.to(waiting).unless(approved)
    ship_now = charged.to(shipped).when(approved).run(ship)
    release = waiting.to(shipped).on("released").run(ship)
    give_up = waiting.to(expired).on_timeout().run(expire)
    finish = shipped.to(done).run(notify, transactional=True)


def test_every_state_step_and_compensation_of_the_checkout_is_in_the_model() -> None:
    drawing = from_definition(CompleteCart)
    definition = CompleteCart.definition
    assert [n.id for n in drawing.states] == list(definition.states)
    steps = {e.step for e in drawing.edges if e.kind is not EdgeKind.COMPENSATION}
    undos = {e.step for e in drawing.edges if e.kind is EdgeKind.COMPENSATION}
    for t in definition.transitions.values():
        assert drawing.edge(t.name).source == t.source
        assert drawing.edge(t.name).target == t.target
        if t.step is not None:
            assert t.step.function_name in steps
            if t.step.compensation_name is not None:
                if definition.states[t.target].final:
                    # nothing can fail after it: its undo never runs, and is not drawn
                    assert t.step.compensation_name not in undos
                    continue
                assert t.step.compensation_name in undos
                undo = drawing.edge(f"{t.name}.undo")
                # back to where compensating goes on: a wait's undo goes on from where it began
                lands = "authorizing" if t.source == "awaiting_payment" else t.source
                assert (undo.source, undo.target) == (t.target, lands)
    assert (drawing.saga, drawing.version, drawing.deadline) == ("complete-cart", 1, 60.0)


def test_the_checkout_model_marks_guards_events_timeouts_and_outcomes() -> None:
    drawing = from_definition(CompleteCart)
    assert drawing.node("new").initial
    assert drawing.node("completed").outcome is Outcome.COMPLETED
    assert drawing.node("(compensated)").kind is NodeKind.OUTCOME
    assert "(failed)" not in {n.id for n in drawing.nodes}  # nothing leads there
    waiting = drawing.node("awaiting_payment")
    assert (waiting.waiting, waiting.events, waiting.timeout) == (
        True,
        ("payment_succeeded",),
        45.0,
    )
    assert drawing.edge("needs_action").guard == "payment_requires_action"
    assert drawing.edge("approved").fallback
    paid = drawing.edge("paid")
    assert (paid.kind, paid.event, paid.payload) == (
        EdgeKind.EVENT,
        "payment_succeeded",
        "PaymentConfirmed",
    )
    # both ways into authorized book the payment in the shop's table, and void it on the way
    # back: one edge, back to authorizing, where the wait for the webhook began
    for name in ("approved", "paid"):
        forward, undo = drawing.edge(name), drawing.edge(f"{name}.undo")
        assert (forward.step, forward.transactional) == ("record_payment", True)
        assert (undo.step, undo.source, undo.target) == (
            "void_payment",
            "authorized",
            "authorizing",
        )
    assert drawing.edge("approved.undo").merged == ("paid.undo",)
    assert {e.id for e in drawing.edges if e.kind is EdgeKind.COMPENSATION} == {
        "reserve.undo",
        "authorize.undo",
        "approved.undo",
        "order.undo",
    }
    assert drawing.edge("validate").read_only
    assert drawing.edge("authorize.undo").undo_on_failure
    assert drawing.edge("authorize").attempts == 3
    # complete leads into the final state: nothing can fail after it, so its undo never runs
    assert "complete.undo" not in {e.id for e in drawing.edges}
    # a wait without an .on_timeout() transition compensates when it times out: from where
    # the wait began, as the undo of authorize leaves from there
    timeout = drawing.edge("awaiting_payment.timeout")
    assert (timeout.kind, timeout.target, timeout.timeout) == (
        EdgeKind.TIMEOUT,
        "authorizing",
        45.0,
    )
    # compensating ends where nothing is left to undo: before the first undoable step
    ends = {e.source for e in drawing.edges if e.id.endswith(".compensated")}
    assert ends == {"new", "validated"}
    assert not any(n.forward_only for n in drawing.nodes)


def test_a_pivot_makes_what_follows_forward_only_and_failing_there_fails_the_run() -> None:
    drawing = from_definition(Shipping)
    assert drawing.edge("charge").pivot
    assert {n.id for n in drawing.states if n.forward_only} == {
        "charged",
        "waiting",
        "shipped",
        "expired",
        "done",
    }
    failing = {e.source for e in drawing.edges if e.target == "(failed)"}
    assert failing == {"charged", "waiting", "shipped"}
    assert {e.source for e in drawing.edges if e.target == "(compensated)"} == {"new"}
    assert drawing.edge("hold").guard == "not approved"
    assert not drawing.edge("ship_now").fallback
    give_up = drawing.edge("give_up")
    assert (give_up.kind, give_up.timeout) == (EdgeKind.TIMEOUT, 90.0)
    assert "waiting.timeout" not in {e.id for e in drawing.edges}
    assert drawing.edge("finish").transactional


def test_labels_say_what_each_edge_does() -> None:
    drawing = from_definition(Shipping)
    words = {e.id: [line.text for line in edge_lines(e)] for e in drawing.edges}
    # named by transition, as history and metrics name them, with the step beside it
    assert words["charge"] == ["charge", "PIVOT", "charge"]
    assert words["hold"] == ["hold", "[not approved]"]
    assert words["release"] == ["release", "on released", "ship"]
    assert words["give_up"] == ["give_up", "after 1.5 min", "expire"]
    assert words["finish"] == ["finish", "notify", "transactional"]
    assert words["reserve.undo"] == ["reserve.undo", "release"]
    assert words["shipped.failed"] == ["retries run out"]
    assert [line.text for line in node_lines(drawing.node("waiting"))] == [
        "waiting",
        "waits for released",
        "timeout 1.5 min",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1 s"), (0.5, "0.5 s"), (60, "1 min"), (150, "2.5 min"), (3600, "1 h"), (5400, "1.5 h")],
)
def test_durations_read_like_a_person_wrote_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_something_that_is_not_a_saga_is_refused() -> None:
    with pytest.raises(DiagramError, match="not a saga"):
        from_definition(In)


def test_importing_statesaga_or_its_diagrams_does_not_load_graphviz() -> None:
    code = (
        "import sys, statesaga, statesaga.diagram, statesaga.cli\n"
        "from statesaga.diagram import from_definition, to_mermaid\n"
        "from definitions.checkout.saga import CompleteCart\n"
        "to_mermaid(from_definition(CompleteCart))\n"
        "print('graphviz' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
