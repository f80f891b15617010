"""Unsound migrations are refused when the newer class is defined, with the fix."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from migration_sagas import Order, OrderV1, Reserved, ReservedV2, release, reserve

from statesaga import DefinitionError, Migration, Saga, State, StepContext


def charge(ctx: StepContext[Order, Reserved]) -> None: ...


def ship(ctx: StepContext[Order, Reserved]) -> None: ...


class Pivoted(Saga[Order, Reserved]):
    """Reserve, wait for the payment, charge (the pivot), wait for the courier, done."""

    name = "pivoted"
    new = State(initial=True)
    reserved = State()
    charged = State()
    awaiting_courier = State(timeout=60)
    done = State(final=True)

    reserve = new.to(reserved).run(reserve, undo=release)
    charge = reserved.to(charged).run(charge, pivot=True)
    wait = charged.to(awaiting_courier)
    pick_up = awaiting_courier.to(done).on("picked_up")


def any_step(ctx: Any) -> None: ...


def any_undo(ctx: Any) -> None: ...


def v2_of_order(migration: Migration[Any, Any], context_type: type = Reserved) -> type:
    """Version 2 of OrderV1's graph (same states), declaring ``migration``."""

    class V2(Saga[Order, context_type]):  # type: ignore[valid-type]
        name = "order"
        version = 2
        migrates_from = migration

        new = State(initial=True)
        reserved = State()
        awaiting_payment = State(timeout=3600)
        done = State(final=True)

        reserve = new.to(reserved).run(any_step, undo=any_undo)
        wait = reserved.to(awaiting_payment)
        pay = awaiting_payment.to(done).on("paid")

    return V2


def test_a_sound_migration_compiles_with_every_open_state_mapped() -> None:
    v2 = v2_of_order(Migration(OrderV1))
    plan = v2.definition.migrations[1]  # type: ignore[attr-defined]
    assert dict(plan.states) == {
        "new": "new",
        "reserved": "reserved",
        "awaiting_payment": "awaiting_payment",
    }
    assert plan.transitions["reserve"] == "reserve"


def test_an_open_state_without_a_place_on_the_new_graph_is_refused() -> None:
    with pytest.raises(DefinitionError) as raised:

        class V2(Saga[Order, Reserved]):
            name = "order"
            version = 2
            migrates_from = Migration(OrderV1)
            new = State(initial=True)
            reserved = State()
            waiting = State(timeout=60)
            done = State(final=True)
            reserve = new.to(reserved).run(reserve, undo=release)
            wait = reserved.to(waiting)
            pay = waiting.to(done).on("paid")

    assert str(raised.value) == (
        "saga 'order': state 'awaiting_payment' of version 1 is open (runs may wait or be due "
        "there) and this version has no state of that name; map it in the migration from "
        "version 1: states={'awaiting_payment': ...}"
    )
    assert raised.value.state == "awaiting_payment"


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ({"nowhere": "new"}, "maps state 'nowhere', which version 1 does not have"),
        ({"reserved": "nowhere"}, "maps state 'reserved' to 'nowhere', which this version"),
        ({"done": "new"}, "maps final state 'done': runs there have ended"),
        ({"awaiting_payment": "done"}, "in final state 'done', which would complete them"),
    ],
)
def test_a_mapping_to_or_from_states_that_do_not_fit_is_refused(
    states: dict[str, str], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        v2_of_order(Migration(OrderV1, states=states))


def test_a_run_before_the_pivot_may_not_land_after_it() -> None:
    with pytest.raises(DefinitionError) as raised:

        class V2(Saga[Order, Reserved]):
            name = "pivoted"
            version = 2
            migrates_from = Migration(Pivoted, states={"reserved": "awaiting_courier"})
            new = State(initial=True)
            reserved = State()
            charged = State()
            awaiting_courier = State(timeout=60)
            done = State(final=True)
            reserve = new.to(reserved).run(reserve, undo=release)
            charge = reserved.to(charged).run(charge, pivot=True)
            wait = charged.to(awaiting_courier)
            pick_up = awaiting_courier.to(done).on("picked_up")

    assert "lands runs of state 'reserved' (before the pivot of version 1" in str(raised.value)
    assert "map it to a state before the pivot" in str(raised.value)


def test_a_run_past_its_pivot_may_not_land_before_it() -> None:
    with pytest.raises(DefinitionError) as raised:

        class V2(Saga[Order, Reserved]):
            name = "pivoted"
            version = 2
            # the courier wait moved before the charge: a charged run would be charged again
            migrates_from = Migration(Pivoted, states={"charged": "reserved"})
            new = State(initial=True)
            reserved = State()
            awaiting_courier = State(timeout=60)
            charged = State()
            done = State(final=True)
            reserve = new.to(reserved).run(reserve, undo=release)
            wait = reserved.to(awaiting_courier)
            pick_up = awaiting_courier.to(charged).on("picked_up")
            charge = charged.to(done).run(charge, pivot=True)

    message = str(raised.value)
    assert "(after the pivot of version 1: they have taken it)" in message
    assert "the pivot would run twice" in message
    assert "map it to a state after the pivot" in message


def test_a_step_a_moved_run_may_still_undo_needs_a_compensation_on_the_new_graph() -> None:
    with pytest.raises(DefinitionError) as raised:

        class V2(Saga[Order, Reserved]):
            name = "order"
            version = 2
            migrates_from = Migration(OrderV1)
            new = State(initial=True)
            reserved = State()
            awaiting_payment = State(timeout=3600)
            done = State(final=True)
            book = new.to(reserved).run(reserve, undo=release)
            wait = reserved.to(awaiting_payment)
            pay = awaiting_payment.to(done).on("paid")

    assert "step 'reserve' of version 1 has a compensation" in str(raised.value)
    assert "transitions={'reserve': ...}" in str(raised.value)
    # mapped to its new name, it compiles
    assert Migration(OrderV1, transitions={"reserve": "book"}).transitions == {"reserve": "book"}


def test_a_context_function_must_take_the_old_context_and_return_the_new() -> None:
    def wrong_input(old: ReservedV2) -> ReservedV2:
        return old

    def wrong_output(old: Reserved) -> str:
        return ""

    with pytest.raises(DefinitionError, match=r"takes old: ReservedV2, but it is called with"):
        v2_of_order(Migration(OrderV1, context=wrong_input), context_type=ReservedV2)
    with pytest.raises(DefinitionError, match=r"returns str, but the new context type is"):
        v2_of_order(Migration(OrderV1, context=wrong_output), context_type=ReservedV2)

    async def asynchronous(old: Reserved) -> ReservedV2:
        return ReservedV2()

    with pytest.raises(DefinitionError, match="is async; make it a plain function"):
        v2_of_order(Migration(OrderV1, context=asynchronous), context_type=ReservedV2)  # type: ignore[arg-type]


@attrs.frozen
class Other:
    order_id: str


@pytest.mark.parametrize(
    ("saga_version", "saga_name", "message"),
    [
        (1, "order", "names version 1, which is not older than this version"),
        (2, "another", "migrates_from names saga 'order'"),
    ],
)
def test_a_migration_comes_from_an_older_version_of_the_same_saga(
    saga_version: int, saga_name: str, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):

        class V(Saga[Order, Reserved]):
            migrates_from = Migration(OrderV1)
            name = saga_name
            version = saga_version
            new = State(initial=True)
            reserved = State()
            awaiting_payment = State(timeout=3600)
            done = State(final=True)
            reserve = new.to(reserved).run(reserve, undo=release)
            wait = reserved.to(awaiting_payment)
            pay = awaiting_payment.to(done).on("paid")


def test_the_input_type_stays_and_migrates_from_holds_migrations() -> None:
    with pytest.raises(DefinitionError, match="keep the input type"):

        class V2(Saga[Other, Reserved]):
            name = "order"
            version = 2
            migrates_from = Migration(OrderV1)
            new = State(initial=True)
            done = State(final=True)
            finish = new.to(done).on("go")

    with pytest.raises(DefinitionError, match="must be a Migration"):
        v2_of_order(OrderV1)  # type: ignore[arg-type]
