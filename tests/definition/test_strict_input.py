"""Inputs and event payloads are validated, never coerced.

Each value below was once converted silently (``2.5`` nights became 2, ``true``
became 1, a list became the text ``"['t-1']"``...) and the run was written and
completed. Now each is an ``InputError`` naming the field, and the store is
exactly as it was before the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import pytest

from statesaga import Engine, InputError, Saga, State, Status, StepContext
from statesaga.serde import converter, structure, structure_decimal


@attrs.frozen
class Traveller:
    name: str


@attrs.frozen
class Trip:
    trip_id: str
    nights: int
    traveller: str = "anonymous"
    price: float = 0.0


@attrs.frozen
class Booking:
    booked: bool = False


@attrs.frozen
class Ticketed:
    pnr: str


def book(ctx: StepContext[Trip, Booking]) -> Booking:
    return Booking(booked=True)


def unbook(ctx: StepContext[Trip, Booking]) -> None:
    return None


class BookTrip(Saga[Trip, Booking]):
    name = "book-trip"
    new = State(initial=True)
    booked = State()
    ticketed = State(final=True)
    reserve = new.to(booked).run(book, undo=unbook)
    issue = booked.to(ticketed).on("tickets_issued", payload=Ticketed)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine("sqlite://") as engine:
        yield engine


GOOD = {"trip_id": "t-1", "nights": 2, "traveller": "Ada"}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("nights", 2.5, "expected a whole number, got a number 2.5 @ $.nights"),
        ("nights", True, "expected a whole number, got true @ $.nights"),
        ("trip_id", 12345, "expected a string, got a whole number 12345 @ $.trip_id"),
        ("trip_id", ["t-1"], "expected a string, got a list ['t-1'] @ $.trip_id"),
        ("traveller", None, "expected a string, got null @ $.traveller"),
    ],
)
def test_a_start_input_of_the_wrong_type_is_rejected_and_nothing_is_written(
    engine: Engine, field: str, value: object, expected: str
) -> None:
    engine.start(BookTrip, GOOD)  # the store is not empty: the comparison means something
    before = engine.store.dump()
    with pytest.raises(InputError) as excinfo:
        engine.start(BookTrip, {**GOOD, field: value})
    assert expected in str(excinfo.value)
    assert excinfo.value.saga == "book-trip"
    assert engine.store.dump() == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "expected a string, got null @ $.pnr"),
        ({"a": 1}, "expected a string, got an object {'a': 1} @ $.pnr"),
        (7, "expected a string, got a whole number 7 @ $.pnr"),
    ],
)
def test_an_event_payload_of_the_wrong_type_is_rejected_and_nothing_is_written(
    engine: Engine, value: object, expected: str
) -> None:
    run = engine.start(BookTrip, GOOD)
    assert run.state == "booked"
    before = engine.store.dump()
    with pytest.raises(InputError) as excinfo:
        engine.send("tickets_issued", {"pnr": value}, instance_id=run.id)
    assert expected in str(excinfo.value)
    assert engine.store.dump() == before


def test_values_of_the_right_type_still_go_through(engine: Engine) -> None:
    run = engine.start(BookTrip, {**GOOD, "price": 120})  # an int is a fine float
    assert run.input == Trip("t-1", 2, "Ada", 120.0)
    assert isinstance(run.input.price, float)
    done = engine.send("tickets_issued", {"pnr": "ABC123"}, instance_id=run.id)
    assert done.run.status is Status.COMPLETED
    assert engine.get(run.id, saga=BookTrip).input == run.input  # read back strictly too


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([GOOD], "expected an object with the fields of Trip, got a list"),
        (None, "expected an object with the fields of Trip, got null"),
        ("t-1", "expected an object with the fields of Trip, got a string 't-1'"),
    ],
)
def test_an_input_that_is_not_an_object_says_so(
    engine: Engine, given: object, expected: str
) -> None:
    with pytest.raises(InputError, match=r"input does not fit Trip: ") as excinfo:
        engine.start(BookTrip, given)
    assert expected in str(excinfo.value)
    assert engine.store.dump() == {t: [] for t in engine.store.dump()}


@attrs.frozen
class Party:
    lead: Traveller
    guests: list[Traveller] = attrs.Factory(list)
    tags: tuple[str, ...] = ()
    ok: bool = False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"lead": {"name": 3}}, "got a whole number 3 @ $.lead.name"),
        ({"lead": ["Ada"]}, "expected an object with the fields of Traveller, got a list"),
        ({"lead": {"name": "A"}, "guests": [{"name": None}]}, "got null @ $.guests[0].name"),
        ({"lead": {"name": "A"}, "tags": "abc"}, "expected a list, got a string 'abc' @ $.tags"),
        ({"lead": {"name": "A"}, "guests": {"name": "B"}}, "expected a list, got an object"),
        ({"lead": {"name": "A"}, "ok": 1}, "expected true or false, got a whole number 1 @ $.ok"),
        ({"lead": {"name": "A"}, "ok": "yes"}, "expected true or false, got a string"),
    ],
)
def test_nested_values_are_checked_with_their_path(value: Any, expected: str) -> None:
    with pytest.raises(InputError) as excinfo:
        structure(value, Party, what="input")
    assert expected in str(excinfo.value)


def test_a_converter_for_your_own_type_can_be_registered() -> None:
    @attrs.frozen
    class Price:
        amount: Decimal

    converter.register_structure_hook(Decimal, structure_decimal)
    converter.register_unstructure_hook(Decimal, str)
    assert structure({"amount": "9.99"}, Price, what="price") == Price(Decimal("9.99"))
    with pytest.raises(InputError, match=r"expected a decimal as a string, got a number 9.99"):
        structure({"amount": 9.99}, Price, what="price")
