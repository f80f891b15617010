"""Child steps are checked when the saga class is defined; each error names the fix."""

from __future__ import annotations

import attrs
import pytest
from child_sagas import BookPackage, HolidayData, HolidayRequest, PackageRequest, package_request

from statesaga import DefinitionError, Saga, State, StepContext

Ctx = StepContext[HolidayRequest, HolidayData]


@attrs.frozen
class Data:
    pass


def charge(ctx: StepContext[PackageRequest, Data]) -> None:
    return None


class WithPivot(Saga[PackageRequest, Data]):
    name = "with-pivot"
    new = State(initial=True)
    done = State(final=True)
    pay = new.to(done).run(charge, pivot=True)


def test_a_child_saga_with_a_pivot_is_refused() -> None:
    with pytest.raises(DefinitionError, match="move the pivot into the parent") as raised:

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).child(WithPivot, input=package_request)

    assert raised.value.transition == "book"


def test_a_child_must_be_a_saga_class() -> None:
    with pytest.raises(DefinitionError, match=r"pass the child saga's class"):

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).child(BookPackage.definition, input=package_request)  # type: ignore[arg-type]


def test_a_child_step_taken_on_an_event_is_refused() -> None:
    with pytest.raises(DefinitionError, match="a child step must be automatic"):

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).on("go").child(BookPackage, input=package_request)


def test_the_state_that_starts_a_child_waits_for_nothing_else() -> None:
    with pytest.raises(DefinitionError, match="move those transitions to another state") as raised:

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).child(BookPackage, input=package_request)
            skip = new.to(done).on("skipped")

    assert raised.value.state == "new"


def test_the_output_reader_takes_the_context_and_the_childs_output() -> None:
    def take(ctx: Ctx) -> None:
        return None

    with pytest.raises(DefinitionError, match=r"called with \(ctx, child_output\)"):

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).child(BookPackage, input=package_request, output=take)  # type: ignore[arg-type]


def test_a_transition_runs_a_step_or_starts_a_child_not_both() -> None:
    with pytest.raises(DefinitionError, match="split it into two transitions"):

        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).run(lambda ctx: None).child(BookPackage, input=package_request)


def test_the_child_is_part_of_the_parents_graph_hash() -> None:
    class Other(BookPackage):
        name = "other-package"

    def graph(child: type[Saga[PackageRequest, object, object]]) -> str:
        class Parent(Saga[HolidayRequest, HolidayData]):
            name = "parent"
            new = State(initial=True)
            done = State(final=True)
            book = new.to(done).child(child, input=package_request)

        return Parent.definition.graph_hash

    assert graph(BookPackage) == graph(BookPackage)
    assert graph(BookPackage) != graph(Other)
