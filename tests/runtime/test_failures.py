"""Structured failures: a step's exception crosses the store as a kind plus details, and back.

Through the public API on every backend: what a step's exception carried is
what ``run.error.details`` holds after a read from the store (JSON values
only), ``statesaga.failures.rebuild`` gives the application its own
exception back with its attributes, rows written before kinds and details
existed still read. (The checkout's use of them: tests/checkout/test_checkout_failures.py.)
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from statesaga import (
    DuplicateStart,
    Engine,
    ErrorKind,
    EventNotAllowed,
    HistoryKind,
    NonRetryableError,
    Retry,
    Saga,
    State,
    Status,
    StepContext,
    StepTimeout,
)
from statesaga.failures import rebuild
from statesaga.store.schema import history, instances


class Level(enum.StrEnum):
    LOW = "low"


class OutOfStock(NonRetryableError):
    """A business error that keeps what the step saw as attributes."""

    def __init__(self, message: str, *, sku: str, requested: int, available: int) -> None:
        super().__init__(message)
        self.sku = sku
        self.requested = requested
        self.available = available
        self.shelves = ("A1", "B2")  # a tuple: stored as a list
        self.level = Level.LOW  # an enum: stored as its value
        self.seen_at = datetime(2025, 1, 1, tzinfo=UTC)  # not JSON: left out
        self.price = Decimal("9.99")  # not JSON: left out
        self.ratio = float("nan")  # not JSON (PostgreSQL's JSONB refuses it): left out
        self._cache = {"internal": True}  # not public: left out


@attrs.define
class Declined(Exception):
    """An attrs exception class: its fields are its details."""

    code: str
    amount: int


class Refused(NonRetryableError):
    """An exception that says exactly what to record, in ``details``."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details
        self.ignored = "not recorded: details say what is"


@attrs.frozen
class Order:
    sku: str
    quantity: int
    fails_with: str = "none"


@attrs.frozen
class Placed:
    reserved: bool = False


def reserve(ctx: StepContext[Order, Placed]) -> Placed:
    order = ctx.input
    if order.fails_with == "out_of_stock":
        raise OutOfStock(
            f"only 1 {order.sku} left, the order wants {order.quantity}",
            sku=order.sku,
            requested=order.quantity,
            available=1,
        )
    if order.fails_with == "declined":
        raise Declined("card_declined", 1250)
    if order.fails_with == "refused":
        raise Refused("refused", {"reason": "fraud", "score": 0.93, "at": datetime.now(UTC)})
    return Placed(reserved=True)


def release(ctx: StepContext[Order, Placed]) -> Placed:
    return Placed(reserved=False)


class PlaceOrder(Saga[Order, Placed]):
    name = "place-order"
    new = State(initial=True)
    reserved = State()
    done = State(final=True)

    reserve = new.to(reserved).run(reserve, undo=release, retry=Retry(attempts=1))
    pay = reserved.to(done).on("paid")


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    engine = Engine(db, sagas=[PlaceOrder])
    yield engine
    engine.close()


# -- exception -> details, through the store ------------------------------------------------------


def test_what_a_steps_exception_carried_is_read_back_from_the_store(engine: Engine) -> None:
    started = engine.start(PlaceOrder, Order("mug", 2, "out_of_stock"))

    run = engine.get(started.id)

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert (run.error.kind, run.error.step, run.error.retryable) == (
        ErrorKind.STEP_ERROR,
        "reserve",
        False,
    )
    assert run.error.type == f"{__name__}.OutOfStock"
    assert dict(run.error.details) == {
        "message": "only 1 mug left, the order wants 2",
        "saga": None,
        "instance_id": None,
        "state": None,
        "key": None,
        "sku": "mug",
        "requested": 2,
        "available": 1,
        "shelves": ["A1", "B2"],
        "level": "low",
    }
    # the run the engine answered with holds the same details as the one read back
    assert started.error == run.error
    failure = next(h for h in run.history if h.kind is HistoryKind.FAILURE)
    assert failure.error == run.error


def test_an_attrs_exception_gives_its_fields(engine: Engine) -> None:
    run = engine.get(engine.start(PlaceOrder, Order("mug", 1, "declined")).id)

    assert run.error is not None
    assert dict(run.error.details) == {"code": "card_declined", "amount": 1250}


def test_an_exception_with_details_gives_exactly_those(engine: Engine) -> None:
    run = engine.get(engine.start(PlaceOrder, Order("mug", 1, "refused")).id)

    assert run.error is not None
    assert dict(run.error.details) == {"reason": "fraud", "score": 0.93}  # "at" is no JSON


# -- details -> the application's exception -------------------------------------------------------


def test_rebuild_gives_the_applications_exception_with_its_attributes(engine: Engine) -> None:
    run = engine.get(engine.start(PlaceOrder, Order("mug", 2, "out_of_stock")).id)
    assert run.error is not None

    error = rebuild(run.error, known=[Declined, OutOfStock])

    assert isinstance(error, OutOfStock)
    assert (error.sku, error.requested, error.available) == ("mug", 2, 1)
    assert str(error) == "only 1 mug left, the order wants 2"
    assert rebuild(run.error, known=[Declined]) is None  # not a class it was told of


def test_rebuild_makes_an_attrs_exception_from_its_fields(engine: Engine) -> None:
    run = engine.get(engine.start(PlaceOrder, Order("mug", 1, "declined")).id)
    assert run.error is not None

    error = rebuild(run.error, known=[OutOfStock, Declined])

    assert isinstance(error, Declined)
    assert (error.code, error.amount) == ("card_declined", 1250)


# -- kinds the interpreter decides -----------------------------------------------------------------


def test_a_cancel_records_its_kind_and_details_and_a_late_event_is_rejected(
    engine: Engine,
) -> None:
    waiting = engine.start(PlaceOrder, Order("mug", 1))
    assert waiting.status is Status.WAITING

    engine.cancel(
        waiting.id,
        reason="the customer left",
        details={"by": "customer", "at": datetime.now(UTC)},  # "at" is no JSON: left out
    )
    late = engine.send("paid", instance_id=waiting.id)

    run = engine.get(waiting.id)
    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert (run.error.kind, run.error.message, dict(run.error.details)) == (
        ErrorKind.CANCELLED,
        "the customer left",
        {"by": "customer"},
    )
    assert late.status.value == "rejected"
    rejected = run.history[-1]
    assert rejected.kind is HistoryKind.REJECTED
    assert rejected.error is not None
    assert rejected.error.kind is ErrorKind.REJECTED


def test_a_step_timeout_records_the_step_and_its_timeout(db: str) -> None:
    release_step = threading.Event()

    def charge(ctx: StepContext[Order, Placed]) -> None:
        release_step.wait(30)

    class Slow(Saga[Order, Placed]):
        name = "slow-charge"
        new = State(initial=True)
        charged = State(final=True)
        charge_it = new.to(charged).run(
            charge, read_only=True, timeout=0.05, retry=Retry(attempts=1)
        )

    with Engine(db, sagas=[Slow]) as engine:
        try:
            run = engine.get(engine.start(Slow, Order("mug", 1)).id)
        finally:
            release_step.set()

    assert run.error is not None
    assert (run.error.type, run.error.kind) == ("StepTimeout", ErrorKind.STEP_TIMEOUT)
    assert run.error.kind.is_timeout
    assert (run.error.details["step"], run.error.details["timeout"]) == ("charge_it", 0.05)
    timeout = rebuild(run.error, known=[StepTimeout])
    assert isinstance(timeout, StepTimeout)
    assert (timeout.step, timeout.timeout, timeout.instance_id) == ("charge_it", 0.05, run.id)


def test_errors_keep_their_context_as_attributes(engine: Engine) -> None:
    run = engine.start(PlaceOrder, Order("mug", 1), idempotency_key="order-1")

    with pytest.raises(EventNotAllowed) as not_allowed:
        engine.send("refund", instance_id=run.id)
    with pytest.raises(DuplicateStart) as duplicate:
        engine.start(PlaceOrder, Order("cup", 1), idempotency_key="order-1")

    assert not_allowed.value.event == "refund"
    assert (duplicate.value.idempotency_key, duplicate.value.instance_id) == ("order-1", run.id)


# -- rows written before kinds and details ---------------------------------------------------------


def test_errors_stored_without_kind_or_details_still_read(engine: Engine, db: str) -> None:
    run = engine.start(PlaceOrder, Order("mug", 2, "out_of_stock"))
    old_step_error = {
        "type": f"{__name__}.OutOfStock",
        "message": "only 1 mug left",
        "retryable": False,
        "step": "reserve",
    }
    old_deadline = {
        "type": "DeadlinePassed",
        "message": "the run deadline passed",
        "retryable": False,
        "step": None,
    }
    database = sa.create_engine(db)
    try:
        with database.begin() as connection:
            connection.execute(
                instances.update().where(instances.c.id == run.id).values(error=old_deadline)
            )
            connection.execute(
                history.update()
                .where(history.c.instance_id == run.id, history.c.error.is_not(None))
                .values(error=old_step_error)
            )
    finally:
        database.dispose()

    read = engine.get(run.id)

    assert read.error is not None
    assert (read.error.kind, dict(read.error.details)) == (ErrorKind.DEADLINE, {})
    assert read.error.kind.is_timeout
    failure = next(h for h in read.history if h.error is not None)
    assert failure.error is not None
    assert (failure.error.kind, dict(failure.error.details)) == (ErrorKind.STEP_ERROR, {})
    # with no details, the exception is made without its constructor: the message only
    error = rebuild(failure.error, known=[OutOfStock])
    assert isinstance(error, OutOfStock)
    assert (str(error), getattr(error, "sku", None)) == ("only 1 mug left", None)
