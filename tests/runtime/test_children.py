"""Child sagas: a step starts another saga, the parent waits for it without holding
anything, reads its output, and compensates it when the parent compensates; a cancel
of the parent cancels the child, and a crash between the two leaves one child.
Through the public API, on SQLite and PostgreSQL, with both engines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from child_sagas import (
    BookHoliday,
    BookPackage,
    CarConfirmed,
    Crash,
    HolidayCtx,
    HolidayData,
    HolidayRequest,
    Holidays,
    Package,
    PackageRequest,
    charge_card,
    package_request,
    refund_card,
    take_package,
)
from trip_sagas import Clock, Engines

from statesaga import Engine, HistoryKind, NonRetryableError, Saga, State, Status
from statesaga.delivery import DeliveryStatus


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def world() -> Holidays:
    return Holidays()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engines(kind: str, db: str, clock: Clock, world: Holidays) -> Iterator[Engines]:
    engines = Engines(kind, db, clock, resources=[world], sagas=[BookHoliday])
    yield engines
    engines.close()


def test_a_child_that_completes_gives_the_parent_its_output(
    engines: Engines, world: Holidays
) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-1"))

    assert run.status is Status.COMPLETED
    assert run.data.package == Package(hotel="h-t-1", car="c-t-1")
    (child,) = engines.engine.children(run.id)
    assert (child.saga, child.status, child.parent_id) == ("book-package", Status.COMPLETED, run.id)
    assert child.correlation_id == run.correlation_id
    assert child.output == Package(hotel="h-t-1", car="c-t-1")
    assert engines.get(run.id).parent_id is None
    assert engines.engine.children(child.id) == []
    assert world.calls == ["book_hotel", "book_car", "charge_card"]


def test_a_child_that_compensates_makes_the_parent_compensate(
    engines: Engines, world: Holidays
) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-2", car_fails=True))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.type == "ChildSagaFailed"
    (child,) = engines.engine.children(run.id)
    assert child.status is Status.COMPENSATED
    assert run.error.details["child_id"] == child.id
    assert world.booked() == (0, 0)
    assert "charge_card" not in world.calls


def test_a_parent_that_compensates_after_its_child_completed_compensates_the_child(
    engines: Engines, world: Holidays
) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-3", card_declined=True))

    assert run.status is Status.COMPENSATED
    (child,) = engines.engine.children(run.id)
    assert child.status is Status.COMPENSATED
    assert world.booked() == (0, 0)
    # the declined charge is refunded first (undo on failure: a lost answer may have
    # taken the money), then the child is compensated
    assert world.calls == [
        "book_hotel",
        "book_car",
        "charge_card",
        "refund_card",
        "cancel_car",
        "cancel_hotel",
    ]
    kinds = [entry.kind for entry in engines.get(child.id).history]
    assert kinds[-3:] == [HistoryKind.CANCEL, HistoryKind.COMPENSATE, HistoryKind.COMPENSATE]
    undo = [h for h in engines.get(run.id).history if h.kind is HistoryKind.COMPENSATE]
    assert [h.transition for h in undo] == ["charge", "book_package"]


def test_the_parent_waits_for_a_waiting_child_and_goes_on_when_it_ends(
    engines: Engines, world: Holidays
) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-4", car_needs_confirmation=True))

    assert (run.status, run.state) == (Status.WAITING, "new")
    (child,) = engines.engine.children(run.id)
    assert (child.status, child.state) == (Status.WAITING, "awaiting_car")
    waited = [h for h in engines.get(run.id).history if h.kind is HistoryKind.WAIT]
    assert [(h.transition, h.link) for h in waited] == [("book_package", child.id)]

    # the child's event completes it, and its end wakes the parent in the same call
    delivery = engines.send(
        BookPackage.car_confirmation, CarConfirmed("car-77"), instance_id=child.id
    )
    assert delivery.status is DeliveryStatus.ACCEPTED
    assert delivery.run is not None
    assert delivery.run.status is Status.COMPLETED

    parent = engines.get(run.id)
    assert parent.status is Status.COMPLETED
    assert parent.data.package == Package(hotel="h-t-4", car="car-77")
    woken = [e for e in parent.inbox if e.event == "book_package:child_ended"]
    assert [e.status for e in woken] == [DeliveryStatus.ACCEPTED]


def test_cancelling_the_parent_cancels_its_child(engines: Engines, world: Holidays) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-5", car_needs_confirmation=True))
    (child,) = engines.engine.children(run.id)

    delivery = engines.cancel(run.id)

    assert delivery.run is not None
    assert delivery.run.status is Status.COMPENSATED
    child_now = engines.get(child.id)
    assert child_now.status is Status.COMPENSATED
    assert child_now.error is not None
    assert child_now.error.details["parent_id"] == run.id
    assert world.booked() == (0, 0)
    # the child's end is not told to a parent that no longer waits for it
    assert [e for e in engines.get(run.id).inbox if e.kind == "event"] == []


def test_a_crash_between_starting_the_child_and_recording_it_leaves_one_child(
    engines: Engines, world: Holidays, clock: Clock
) -> None:
    world.crash_on_car = 1
    with pytest.raises(Crash):
        engines.start(BookHoliday, HolidayRequest("t-6"))
    (parent,) = engines.engine.list(saga="book-holiday")
    assert (parent.status, parent.state) == (Status.RUNNING, "new")

    clock.advance(60)  # every lease has lapsed: recovery finds both runs
    engines.recover()

    parent = engines.get(parent.id)
    assert parent.status is Status.COMPLETED
    assert parent.data.package == Package(hotel="h-t-6", car="c-t-6")
    assert len(engines.engine.list(saga="book-package")) == 1
    assert [c.status for c in engines.engine.children(parent.id)] == [Status.COMPLETED]


def test_a_child_that_ended_while_its_parent_was_down_still_reaches_it(
    engines: Engines, world: Holidays, clock: Clock
) -> None:
    run = engines.start(BookHoliday, HolidayRequest("t-7", car_needs_confirmation=True))
    (child,) = engines.engine.children(run.id)
    world.crash_on_car = 1
    with pytest.raises(Crash):  # the child's last step crashes the engine driving it
        engines.send(BookPackage.car_confirmation, CarConfirmed("car-9"), instance_id=child.id)
    assert engines.get(run.id).status is Status.WAITING

    clock.advance(60)
    engines.recover()

    assert engines.get(child.id).status is Status.COMPLETED
    parent = engines.get(run.id)
    assert parent.status is Status.COMPLETED
    assert parent.data.package == Package(hotel="h-t-7", car="car-9")


class Gate:
    """A package step whose first call (the run's holder) pauses until told to go on, and
    whose next call (the engine that took the run over meanwhile) fails for good."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_in, self.first_go = threading.Event(), threading.Event()
        self.second_in, self.second_go = threading.Event(), threading.Event()


def gated_package_request(ctx: HolidayCtx) -> PackageRequest:
    gate = ctx.resource(Gate)
    gate.calls += 1
    if gate.calls == 1:
        gate.first_in.set()
        gate.first_go.wait(10)
        return package_request(ctx)
    gate.second_in.set()
    gate.second_go.wait(10)
    raise NonRetryableError("no package for these dates")


class ChargeThenPackage(Saga[HolidayRequest, HolidayData]):
    name = "charge-then-package"

    new = State(initial=True)
    charged = State()
    packaged = State(final=True)

    charge = new.to(charged).run(charge_card, undo=refund_card)
    book_package = charged.to(packaged).child(
        BookPackage, input=gated_package_request, output=take_package
    )


def test_a_child_a_lost_holder_completed_before_its_parent_compensated_is_compensated(
    db: str, world: Holidays, clock: Clock
) -> None:
    """A holder paused past its lease in a child step starts the child after all, and the
    child completes, while the engine that took the parent over fails that step for good
    and compensates the parent without it: the parent's end finds the child and
    compensates it (a child that ends after its parent compensated is the other order,
    played by the testing kit in tests/testing/test_whole_trip_kit.py)."""
    gate = Gate()
    options: dict[str, Any] = {
        "clock": clock,
        "resources": [world, gate],
        "sagas": [ChargeThenPackage],
        "lease_ttl": 3600,  # only the test's clock lets a lease lapse
    }
    with Engine(db, **options) as holder, Engine(db, **options) as other:
        ended: list[object] = []

        def hold() -> None:
            try:
                ended.append(holder.start(ChargeThenPackage, HolidayRequest("t-8")))
            except Exception as error:  # its write of the parent is fenced out
                ended.append(error)

        first = threading.Thread(target=hold)
        first.start()
        assert gate.first_in.wait(10)  # the holder is in the package step, paused
        clock.advance(3601)  # past its lease
        second = threading.Thread(target=other.recover)
        second.start()
        assert gate.second_in.wait(10)  # the other engine took the parent over
        (parent,) = other.list(saga="charge-then-package")
        gate.first_go.set()  # the paused holder goes on: it starts the child, which completes
        first.join(10)
        (child,) = other.children(parent.id)
        assert child.status is Status.COMPLETED
        gate.second_go.set()  # the step fails for good there: the parent compensates
        second.join(10)

        assert other.get(parent.id).status is Status.COMPENSATED
        assert other.get(child.id).status is Status.COMPENSATED
        assert world.booked() == (0, 0)
        assert world.charges == set()
        assert world.calls.count("cancel_car") == 1
