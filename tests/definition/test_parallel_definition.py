"""Parallel transitions are checked when the saga class is defined: each mistake is a
DefinitionError that names the transition or branch and the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from statesaga import Branch, DefinitionError, Saga, State, StepContext


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    a: int = 0
    b: int = 0


Ctx = StepContext[In, Data]


def step(ctx: Ctx) -> Data:
    return ctx.data


def undo(ctx: Ctx) -> None:
    return None


def define(**branches: Any) -> Callable[[], type]:
    def make() -> type:
        class Forked(Saga[In, Data]):
            name = "forked"
            new = State(initial=True)
            done = State(final=True)
            go = new.to(done).parallel(**branches)

        return Forked

    return make


def fails(make: Callable[[], object], *words: str) -> str:
    with pytest.raises(DefinitionError) as caught:
        make()
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_a_well_formed_fork_compiles_with_named_branch_steps() -> None:
    forked = define(
        a=Branch(step, undo=undo, writes="a"),
        b=Branch(step, undo=undo, writes="b").then(step, read_only=True),
    )()
    spec = forked.definition.transitions["go"].parallel  # type: ignore[attr-defined]
    assert [s.name for s in spec.steps] == ["go.a", "go.b.1", "go.b.2"]
    assert [b.writes for b in spec.branches] == [("a",), ("b",)]


def test_no_branches() -> None:
    fails(define(), "transition 'go': .parallel() has no branches", "Branch(")


def test_a_branch_that_is_not_a_branch() -> None:
    fails(define(a=step), "a branch must be a Branch", "a=Branch(step, undo=...)")


def test_two_branches_writing_one_field() -> None:
    fails(
        define(a=Branch(step, undo=undo, writes="a"), b=Branch(step, undo=undo, writes="a")),
        "branches 'a' and 'b' of 'go' both write the context field 'a'",
        "disjoint",
    )


def test_a_field_the_context_does_not_have() -> None:
    fails(
        define(a=Branch(step, undo=undo, writes="nope")),
        "writes 'nope', which is not a field of the context type Data",
    )


def test_a_branch_step_with_side_effects_and_no_undo() -> None:
    fails(
        define(a=Branch(step)),
        "branch step 'go.a' has no compensation",
        "undo=...",
        "read_only=True",
    )


def test_read_only_with_an_undo() -> None:
    fails(define(a=Branch(step, undo=undo, read_only=True)), "read_only", "drop one")


def test_undo_on_failure_without_an_undo() -> None:
    fails(define(a=Branch(step, read_only=True, undo_on_failure=True)), "add undo=...")


def test_a_bad_max_concurrency() -> None:
    def make() -> None:
        class Forked(Saga[In, Data]):
            name = "forked"
            new = State(initial=True)
            done = State(final=True)
            go = new.to(done).parallel(max_concurrency=0, a=Branch(step, undo=undo))

    fails(make, "max_concurrency=0", ">= 1")


def test_a_fork_taken_on_an_event() -> None:
    def make() -> None:
        class Forked(Saga[In, Data]):
            name = "forked"
            new = State(initial=True)
            done = State(final=True)
            go = new.to(done).on("started").parallel(a=Branch(step, undo=undo))

    fails(make, "runs parallel branches but is taken .on('started')", "must be automatic")


def test_a_fork_with_a_step_of_its_own() -> None:
    def make() -> None:
        class Forked(Saga[In, Data]):
            name = "forked"
            new = State(initial=True)
            done = State(final=True)
            go = new.to(done).run(step, undo=undo).parallel(a=Branch(step, undo=undo))

    fails(make, "both runs a step and has parallel branches")


def test_a_branch_undo_after_the_pivot() -> None:
    def make() -> None:
        class Forked(Saga[In, Data]):
            name = "forked"
            new = State(initial=True)
            paid = State()
            done = State(final=True)
            pay = new.to(paid).run(step, pivot=True)
            go = paid.to(done).parallel(a=Branch(step, undo=undo))

    fails(make, "branch step 'go.a' has a compensation but runs after a pivot")


def test_after_the_pivot_a_branch_step_needs_no_undo() -> None:
    class Forked(Saga[In, Data]):
        name = "forked"
        new = State(initial=True)
        paid = State()
        done = State(final=True)
        pay = new.to(paid).run(step, pivot=True)
        go = paid.to(done).parallel(a=Branch(step), b=Branch(step))

    assert Forked.definition.branch_steps.keys() == {"go.a", "go.b"}


def test_a_branch_step_with_the_wrong_signature() -> None:
    def two(ctx: Ctx, extra: int) -> None:
        return None

    fails(define(a=Branch(two, undo=undo)), "branch step 'go.a'", "accept exactly that")


def test_the_branches_are_part_of_the_graph_hash() -> None:
    one = define(a=Branch(step, undo=undo))()
    two = define(a=Branch(step, undo=undo), b=Branch(step, undo=undo))()
    assert one.definition.graph_hash != two.definition.graph_hash  # type: ignore[attr-defined]
