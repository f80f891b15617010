"""Parallel branches through the public API: the branches run at once and join; a branch
that fails for good has every branch step that took effect compensated, each branch in
reverse; a crash mid-fork recovers without running a done branch step again. On SQLite
and PostgreSQL, with the sync and the async engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from parallel_trip import (
    BRANCH_STEPS,
    Agency,
    BookTripTogether,
    Crash,
    SoldOut,
    TripOrder,
    TripPlan,
)
from trip_sagas import Clock, Engines

from statesaga import HistoryKind, Run, Status, StepContext


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def agency() -> Agency:
    return Agency()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engines(kind: str, db: str, clock: Clock, agency: Agency) -> Iterator[Engines]:
    engines = Engines(kind, db, clock, resources=[agency], sagas=[BookTripTogether])
    yield engines
    engines.close()


def drive_to_the_end(engines: Engines, clock: Clock, run_id: str) -> Run[Any, Any, Any]:
    """Let time pass (retries' backoffs, expired leases) and recover until the run ends."""
    for _ in range(20):
        run = engines.get(run_id)
        if run.status.is_terminal:
            return run
        clock.advance(120)
        engines.recover()
    raise AssertionError(f"run {run_id} did not end: {engines.get(run_id)}")


def records(run: Run[Any, Any, Any], kind: HistoryKind) -> list[str | None]:
    return [h.transition for h in run.history if h.kind is kind]


def test_the_branches_run_at_once_and_join(engines: Engines, agency: Agency) -> None:
    # the first step of each branch waits for the other two: only concurrent branches pass
    agency.barrier = threading.Barrier(3, timeout=20)

    run = engines.start(BookTripTogether, TripOrder("t-1"))

    assert run.status is Status.COMPLETED
    assert run.data == TripPlan(True, "F-t-1", "H-t-1", "C-t-1", True, True)
    assert agency.holdings("t-1") == {"budget", "flight", "hotel", "car", "car-confirmed"}
    history = engines.get(run.id).history
    forward = [h for h in history if h.kind is HistoryKind.FORWARD]
    branch_records = [h for h in forward if h.transition in BRANCH_STEPS]
    # each branch step is a transition of its own, the run staying in the fork's state
    assert sorted(h.transition or "" for h in branch_records) == sorted(BRANCH_STEPS)
    assert {(h.from_state, h.to_state) for h in branch_records} == {("budgeted", "budgeted")}
    assert [h.step for h in branch_records if h.transition == "book.car.2"] == ["confirm_car"]
    # a chain runs in order; the join comes after every branch step
    names = [h.transition for h in forward]
    assert names.index("book.car.1") < names.index("book.car.2")
    join = next(h for h in forward if h.transition == "book")
    assert (join.from_state, join.to_state) == ("budgeted", "booked")
    assert names.index("book") > max(names.index(s) for s in BRANCH_STEPS)
    each_once = ["hold_budget", "book_flight", "book_hotel", "reserve_car", "confirm_car"]
    assert sorted(agency.calls) == sorted([*each_once, "issue_itinerary"])


def test_a_branch_failing_for_good_compensates_every_branch_in_reverse(
    engines: Engines, agency: Agency
) -> None:
    # the hotel fails for good once the car is confirmed: by then the car branch took
    # both its steps, and the flight is booked or being booked
    agency.waits["book_hotel"] = "confirm_car"
    agency.failures["book_hotel"] = [SoldOut("no rooms left")]

    run = engines.start(BookTripTogether, TripOrder("t-2"))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.step == "book.hotel"
    assert run.error.message == "no rooms left"
    assert agency.holdings("t-2") == set()
    undone = [c for c in agency.calls if c.startswith(("cancel", "release", "unconfirm"))]
    # what took effect is undone latest first: each branch in reverse, the failed hotel's
    # own undo too (undo_on_failure: it may have booked part-way), the budget held before
    # the fork last
    assert undone.index("unconfirm_car") < undone.index("release_car")
    assert sorted(undone) == sorted(
        ["cancel_hotel", "unconfirm_car", "release_car", "cancel_flight", "release_budget"]
    )
    assert undone[-1] == "release_budget"
    history = engines.get(run.id).history
    compensated = records(engines.get(run.id), HistoryKind.COMPENSATE)
    assert sorted(compensated) == sorted(
        ["book.hotel", "book.car.2", "book.car.1", "book.flight", "budget"]
    )
    assert compensated[-1] == "budget"
    failure = [h for h in history if h.kind is HistoryKind.FAILURE]
    assert [h.transition for h in failure] == ["book.hotel"]
    assert "book" not in records(engines.get(run.id), HistoryKind.FORWARD)  # never joined


def test_each_branch_retries_on_its_own(engines: Engines, agency: Agency, clock: Clock) -> None:
    agency.failures["book_flight"] = [ConnectionError("flaky"), ConnectionError("flaky")]

    started = engines.start(BookTripTogether, TripOrder("t-3"))
    run = drive_to_the_end(engines, clock, started.id)

    assert run.status is Status.COMPLETED
    assert agency.calls.count("book_flight") == 3
    assert agency.calls.count("book_hotel") == 1
    retries = [h for h in run.history if h.kind is HistoryKind.RETRY]
    assert [(h.transition, h.attempt) for h in retries] == [("book.flight", 1), ("book.flight", 2)]


def test_a_crash_mid_fork_recovers_without_running_done_branch_steps_again(
    engines: Engines, agency: Agency, clock: Clock
) -> None:
    crashed: list[str] = []

    def crash_once_the_flight_is_recorded(ctx: StepContext[TripOrder, TripPlan]) -> None:
        if crashed:
            return
        for _ in range(1000):  # the flight's transition is committed by the engine's thread
            history = engines.get(ctx.instance_id).history
            if any(h.transition == "book.flight" for h in history):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the flight's transition was never recorded")
        crashed.append(ctx.instance_id)
        raise Crash("the process dies while the hotel is being booked")

    agency.before["book_hotel"] = crash_once_the_flight_is_recorded

    with pytest.raises(Crash):
        engines.start(BookTripTogether, TripOrder("t-4"))
    (run_id,) = crashed
    assert engines.get(run_id).status is Status.RUNNING

    run = drive_to_the_end(engines, clock, run_id)  # the lease expires; a recovery resumes

    assert run.status is Status.COMPLETED
    assert agency.calls.count("book_flight") == 1  # done before the crash: not run again
    assert agency.calls.count("book_hotel") == 2
    assert records(run, HistoryKind.FORWARD).count("book.flight") == 1
    assert agency.holdings("t-4") == {"budget", "flight", "hotel", "car", "car-confirmed"}
