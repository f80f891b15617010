"""The sync engine over SQLite: every runtime promise, through the public API."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sagas
import sqlalchemy as sa
from sagas import Confirmation, Fatal, Linear, Order, Pivoted, Progress, Receipt, journal

from statesaga import (
    DuplicateStart,
    Engine,
    EntityBusy,
    EventNotAllowed,
    FencedOut,
    HistoryKind,
    InputError,
    InstanceNotFound,
    RetryNotAllowed,
    Saga,
    SagaNotRegistered,
    State,
    Status,
    StepContext,
)
from statesaga.delivery import DeliveryStatus
from statesaga.testing import FakeClock  # the engine's sleeps still really sleep


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


@pytest.fixture(params=["row lease", "sql locks", "redis locks"])
def engine(db: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on each backend, with each kind of entity lock.

    The store's own row lease is the default; SQL leases and Redis leases are
    layered on top. Whatever the lock, every promise below must hold.
    """
    from statesaga.locks import SqlLocks
    from statesaga.store import SqlStore

    if request.param == "row lease":
        with Engine(db) as engine:
            yield engine
    elif request.param == "sql locks":
        store = SqlStore(db)
        with Engine(store, locks=SqlLocks(store)) as engine:
            yield engine
    else:
        from statesaga.locks import RedisLocks

        url = request.getfixturevalue("redis_url")
        locks = RedisLocks(url, namespace=f"statesaga-test:{uuid.uuid4().hex}:")
        try:
            with Engine(db, locks=locks) as engine:
                yield engine
        finally:
            for key in locks.client.scan_iter(f"{locks.namespace}*"):
                locks.client.delete(key)
            locks.close()


def kinds(engine: Engine, run_id: str) -> list[str]:
    return [entry.kind.value for entry in engine.get(run_id).history]


# -- the happy path ------------------------------------------------------------------------


def test_a_run_completes_with_typed_output_and_one_history_row_per_transition(
    engine: Engine,
) -> None:
    run = engine.start(Linear, Order("o-1"), key="order:o-1", correlation_id="req-1")

    assert run.status is Status.COMPLETED
    assert run.state == "shipped"
    assert run.output == Receipt("o-1", 3)
    assert run.data == Progress(["reserve", "charge", "ship"])
    stored = engine.get(run.id)
    assert [(h.kind, h.transition) for h in stored.history] == [
        (HistoryKind.START, None),
        (HistoryKind.FORWARD, "reserve"),
        (HistoryKind.FORWARD, "charge"),
        (HistoryKind.FORWARD, "ship"),
    ]
    assert [h.version for h in stored.history] == [1, 2, 3, 4]
    assert stored.output == Receipt("o-1", 3)
    assert stored.correlation_id == "req-1"


def test_input_may_be_a_dict_that_cattrs_structures(engine: Engine) -> None:
    run = engine.start(Linear, {"order_id": "o-2", "amount": 5})
    assert run.input == Order("o-2", 5)


def test_steps_get_stable_idempotency_keys_across_retries(engine: Engine) -> None:
    journal.fail["charge"] = 2

    run = engine.start(Linear, Order("o-3"))

    assert run.status is Status.COMPLETED
    charge_keys = {key for name, key in journal.calls if name == "charge"}
    assert journal.names().count("charge") == 3
    assert charge_keys == {f"{run.id}:1:charge"}
    assert kinds(engine, run.id) == ["start", "forward", "retry", "retry", "forward", "forward"]


# -- bad input leaves the database as it was -------------------------------------------------


def test_malformed_input_is_rejected_and_nothing_is_written(engine: Engine) -> None:
    before = engine.store.dump()
    with pytest.raises(InputError, match=r"input does not fit Order.*order_id"):
        engine.start(Linear, {"amount": "lots"})
    assert engine.store.dump() == before


def test_an_unknown_saga_is_rejected_and_nothing_is_written(engine: Engine) -> None:
    before = engine.store.dump()
    with pytest.raises(SagaNotRegistered, match="no saga named 'nope'"):
        engine.start("nope", {})
    assert engine.store.dump() == before


def test_a_busy_key_fails_fast_and_nothing_is_written(engine: Engine) -> None:
    first = engine.start(sagas.Waiting, Order("o-4"), key="order:o-4")
    assert first.status is Status.WAITING
    before = engine.store.dump()

    with pytest.raises(EntityBusy, match="order:o-4 is busy") as caught:
        engine.start(sagas.Waiting, Order("o-4"), key="order:o-4")

    assert caught.value.key == "order:o-4"
    assert engine.store.dump() == before


def test_a_busy_key_can_be_waited_for(engine: Engine) -> None:
    first = engine.start(sagas.Waiting, Order("o-5"), key="order:o-5")
    timer = threading.Timer(
        0.1, lambda: engine.send("confirmed", {"code": "ok"}, instance_id=first.id)
    )
    timer.start()
    second = engine.start(Linear, Order("o-5"), key="order:o-5", wait=5)
    timer.join()
    assert second.status is Status.COMPLETED  # a different saga: keys are per saga
    third = engine.start(sagas.Waiting, Order("o-5"), key="order:o-5", wait=5)
    assert third.status is Status.WAITING


def test_an_idempotent_start_returns_the_existing_run(engine: Engine) -> None:
    first = engine.start(Linear, Order("o-6"), idempotency_key="req-6")
    again = engine.start(Linear, Order("o-6"), idempotency_key="req-6")

    assert again.id == first.id
    assert journal.names().count("reserve") == 1
    before = engine.store.dump()
    with pytest.raises(DuplicateStart, match="different input"):
        engine.start(Linear, Order("o-other"), idempotency_key="req-6")
    assert engine.store.dump() == before


# -- events --------------------------------------------------------------------------------


def test_a_waiting_run_takes_its_event_with_a_typed_payload(engine: Engine) -> None:
    run = engine.start(sagas.Waiting, Order("o-7"), key="order:o-7")
    assert (run.status, run.state) == (Status.WAITING, "awaiting")

    delivery = engine.send("confirmed", {"code": "A1"}, saga=sagas.Waiting, key="order:o-7")

    assert (delivery.status, delivery.duplicate) == (DeliveryStatus.ACCEPTED, False)
    assert delivery.run.status is Status.COMPLETED
    entry = engine.get(run.id).history[-1]
    assert (entry.kind, entry.event, entry.transition) == (
        HistoryKind.EVENT,
        "confirmed",
        "confirm",
    )


def test_a_wrong_event_or_payload_is_rejected_and_nothing_is_written(engine: Engine) -> None:
    run = engine.start(sagas.Waiting, Order("o-8"))
    before = engine.store.dump()

    with pytest.raises(EventNotAllowed, match="has no event 'shipped' \\(it takes: confirmed\\)"):
        engine.send("shipped", instance_id=run.id)
    with pytest.raises(InputError, match="payload of event 'confirmed'"):
        engine.send("confirmed", {"code": 7, "extra": True}, instance_id=run.id)
    with pytest.raises(InstanceNotFound):
        engine.send("confirmed", {"code": "x"}, instance_id="missing")

    assert engine.store.dump() == before
    delivery = engine.send("confirmed", Confirmation("ok"), instance_id=run.id)
    assert delivery.run.status is Status.COMPLETED


def test_an_event_to_a_finished_run_is_recorded_as_not_accepted(engine: Engine) -> None:
    run = engine.start(sagas.Waiting, Order("o-9"))
    engine.send("confirmed", {"code": "A"}, instance_id=run.id, event_id="hook-1")

    late = engine.send("confirmed", {"code": "B"}, instance_id=run.id, event_id="hook-2")

    assert late.status is DeliveryStatus.REJECTED
    assert late.reason == "the run had ended (completed) when 'confirmed' was consumed"
    shown = engine.get(run.id)
    assert [(e.event_id, e.status.value) for e in shown.inbox] == [
        ("hook-1", "accepted"),
        ("hook-2", "rejected"),
    ]
    last = shown.history[-1]
    assert (last.kind, last.event) == (HistoryKind.REJECTED, "confirmed")
    assert last.error is not None
    assert last.error.type == "EventRejected"


def test_a_duplicate_event_is_delivered_once(engine: Engine) -> None:
    run = engine.start(sagas.Waiting, Order("o-9d"))
    first = engine.send("confirmed", {"code": "A"}, instance_id=run.id, event_id="hook-1")

    again = engine.send("confirmed", {"code": "A"}, instance_id=run.id, event_id="hook-1")

    assert (again.status, again.duplicate, again.event_id) == (
        DeliveryStatus.ACCEPTED,
        True,
        first.event_id,
    )
    assert journal.names().count("confirm") == 1
    assert len(engine.get(run.id).inbox) == 1


# -- failure and compensation ------------------------------------------------------------------


def test_a_failure_compensates_completed_steps_in_reverse_order(engine: Engine) -> None:
    journal.fail["ship"] = -1
    journal.error["ship"] = Fatal

    run = engine.start(Linear, Order("o-10"))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert (run.error.step, run.error.retryable) == ("ship", False)
    assert journal.names() == ["reserve", "charge", "ship", "undo_charge", "undo_reserve"]
    assert kinds(engine, run.id)[-3:] == ["failure", "compensate", "compensate"]


def test_retries_exhausted_compensate(engine: Engine) -> None:
    journal.fail["charge"] = -1

    run = engine.start(Linear, Order("o-11"))

    assert run.status is Status.COMPENSATED
    assert journal.names() == ["reserve", "charge", "charge", "charge", "undo_reserve"]


def test_a_compensation_that_keeps_failing_leaves_the_run_failed_and_retriable(
    engine: Engine,
) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    journal.fail["undo_reserve"] = -1

    run = engine.start(Linear, Order("o-12"), key="order:o-12")

    assert run.status is Status.FAILED
    assert run.error is not None
    assert run.error.step == "reserve.undo"
    assert journal.names().count("undo_reserve") == 5
    with pytest.raises(EntityBusy):  # a failed run keeps its key until someone resolves it
        engine.start(Linear, Order("o-12"), key="order:o-12")

    journal.fail["undo_reserve"] = 0
    retried = engine.retry(run.id)

    assert retried.status is Status.COMPENSATED
    assert kinds(engine, run.id)[-2:] == ["resume", "compensate"]
    with pytest.raises(RetryNotAllowed):
        engine.retry(run.id)


def test_after_the_pivot_failures_go_forward_never_back(engine: Engine) -> None:
    journal.fail["notify"] = -1

    run = engine.start(Pivoted, Order("o-13"))

    assert run.status is Status.FAILED
    assert "undo_reserve" not in journal.names()
    refused = engine.cancel(run.id)
    assert (refused.status, refused.reason) == (DeliveryStatus.REJECTED, "it is failed")
    assert engine.get(run.id).history[-1].kind is HistoryKind.REJECTED
    journal.fail["notify"] = 0
    assert engine.retry(run.id).status is Status.COMPLETED


def test_cancel_compensates_a_waiting_run(engine: Engine) -> None:
    run = engine.start(sagas.Waiting, Order("o-14"))

    delivery = engine.cancel(run.id, reason="customer changed their mind")

    assert delivery.status is DeliveryStatus.ACCEPTED
    cancelled = delivery.run
    assert cancelled.status is Status.COMPENSATED
    assert cancelled.error is not None
    assert cancelled.error.message == "customer changed their mind"
    assert journal.names() == ["reserve", "undo_reserve"]
    again = engine.cancel(run.id)
    assert (again.status, again.reason) == (DeliveryStatus.REJECTED, "it is compensated")


# -- the transition's own transaction ---------------------------------------------------------


def effect_rows(engine: Engine) -> list[tuple[str, str]]:
    with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(sagas.effects.c.instance_id, sagas.effects.c.step)
            )
        ]  # type: ignore[misc]


@pytest.fixture
def effects_table(engine: Engine) -> None:
    sagas.effects.metadata.create_all(engine.store.engine)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("effects_table")
def test_a_transactional_step_commits_its_writes_with_the_transition(engine: Engine) -> None:
    run = engine.start(sagas.Transactional, Order("o-15"))
    assert run.status is Status.COMPLETED
    assert effect_rows(engine) == [(run.id, "reserve")]


@pytest.mark.usefixtures("effects_table")
def test_a_failing_transactional_step_rolls_its_writes_back(engine: Engine) -> None:
    journal.fail["reserve"] = 1  # fails after writing; retried once

    run = engine.start(sagas.Transactional, Order("o-16"))

    assert run.status is Status.COMPLETED
    assert effect_rows(engine) == [(run.id, "reserve")]  # the failed attempt's row is gone


@pytest.mark.usefixtures("effects_table")
def test_the_undo_of_a_transactional_step_writes_in_the_compensating_transaction(
    engine: Engine,
) -> None:
    journal.fail["charge"] = -1  # charge always fails: reserve is compensated

    run = engine.start(sagas.Transactional, Order("o-16b"))

    assert run.status is Status.COMPENSATED
    assert journal.names()[-1] == "undo_reserve"
    assert effect_rows(engine) == []  # the row reserve wrote was deleted, in the same commit


@pytest.mark.usefixtures("effects_table")
def test_a_failing_transactional_undo_rolls_its_writes_back_and_is_retried(
    engine: Engine,
) -> None:
    journal.fail["charge"] = -1
    journal.fail["undo_reserve"] = 2  # deletes the row, then fails: twice

    run = engine.start(sagas.Transactional, Order("o-16c"))

    assert run.status is Status.COMPENSATED
    assert journal.names().count("undo_reserve") == 3
    assert effect_rows(engine) == []
    undo_rows = [
        entry.kind.value
        for entry in engine.get(run.id).history
        if entry.kind in (HistoryKind.COMPENSATION_RETRY, HistoryKind.COMPENSATE)
    ]
    assert undo_rows == ["compensation_retry", "compensation_retry", "compensate"]


class PaymentClient:
    """What a step needs from outside: here, a client that records what it was asked."""

    def __init__(self) -> None:
        self.charged: list[str] = []


def charge_through_the_client(ctx: StepContext[Order, Progress]) -> None:
    ctx.resource(PaymentClient).charged.append(ctx.input.order_id)


class UsesAResource(Saga[Order, Progress]):
    name = "uses-a-resource"
    new = State(initial=True)
    charged = State(final=True)
    charge = new.to(charged).run(charge_through_the_client, pivot=True)


def test_a_step_gets_the_resources_the_engine_was_given(db: str) -> None:
    client = PaymentClient()
    with Engine(db, resources=[client]) as engine:
        run = engine.start(UsesAResource, Order("o-res-1"))

    assert run.status is Status.COMPLETED
    assert client.charged == ["o-res-1"]


def test_a_step_asking_for_a_resource_the_engine_lacks_fails_at_once(db: str) -> None:
    with Engine(db) as engine:
        run = engine.start(UsesAResource, Order("o-res-2"))
        history = engine.get(run.id).history

    assert run.status is Status.COMPENSATED  # a pivot that fails before it ran compensates
    assert run.error is not None
    assert run.error.type.endswith("MissingResource")
    assert "asked for a PaymentClient" in run.error.message
    assert "Engine(..., resources=[...])" in run.error.message
    assert [entry.kind for entry in history if entry.transition == "charge"] == [
        HistoryKind.FAILURE  # not retried
    ]


def test_a_holder_whose_run_was_claimed_mid_step_is_fenced_out(engine: Engine, db: str) -> None:
    other = Engine(db)
    run = engine.start(sagas.Waiting, Order("o-17"))

    def steal(_ctx: object) -> None:  # another engine claims the run mid-step, lease expired
        later = time.time() + 3600
        version = other.store.get(run.id).version  # type: ignore[union-attr]
        other.store.claim(run.id, version, "thief", later + 30, later)

    journal.hooks["confirm"] = steal
    # the event was taken (recorded with the claim that applied it); the late write of the
    # fenced-out holder is rejected, and the run is the thief's to drive on: no error to the
    # sender, whose event is safe
    delivery = engine.send("confirmed", {"code": "x"}, instance_id=run.id)
    assert delivery.status is DeliveryStatus.ACCEPTED
    assert (delivery.run.status, delivery.run.state) == (Status.RUNNING, "awaiting")
    assert kinds(engine, run.id) == ["start", "forward", "forward"]
    other.close()


# -- time: timeouts, deadlines, delayed retries, recovery --------------------------------------


def test_a_waiting_state_times_out_and_compensates(db: str) -> None:
    clock = FakeClock()
    with Engine(db, clock=clock) as engine:
        run = engine.start(sagas.Waiting, Order("o-18"))
        assert engine.recover() == []
        clock.advance(61)

        (recovered,) = engine.recover()

    assert recovered.id == run.id
    assert recovered.status is Status.COMPENSATED
    assert recovered.error is not None
    assert recovered.error.type == "WaitTimedOut"
    assert journal.names() == ["reserve", "undo_reserve"]


def test_the_run_deadline_compensates(db: str) -> None:
    clock = FakeClock()
    with Engine(db, clock=clock) as engine:
        run = engine.start(sagas.Waiting, Order("o-19"), deadline=30)
        clock.advance(31)
        (recovered,) = engine.recover()
    assert recovered.id == run.id
    assert recovered.status is Status.COMPENSATED
    assert recovered.error is not None
    assert recovered.error.type == "DeadlinePassed"


def test_a_long_retry_delay_releases_the_run_until_it_is_due(db: str) -> None:
    clock = FakeClock()
    journal.fail["charge"] = 1
    with Engine(db, clock=clock, max_inline_sleep=0.0) as engine:
        run = engine.start(Linear, Order("o-20"))
        assert (run.status, run.state) == (Status.RUNNING, "reserved")
        assert engine.recover() == []  # not due yet
        clock.advance(1)
        (recovered,) = engine.recover()
    assert recovered.status is Status.COMPLETED


def test_a_crashed_holder_is_recovered_after_its_lease_expires(db: str) -> None:
    clock = FakeClock()

    def crash(_ctx: object) -> None:
        raise KeyboardInterrupt  # stands in for a process dying mid-step

    journal.hooks["charge"] = crash
    with Engine(db, clock=clock, lease_ttl=10) as engine:
        with pytest.raises(KeyboardInterrupt):
            engine.start(Linear, Order("o-21"))
        (stuck,) = engine.list()
        assert stuck.status is Status.RUNNING
        assert engine.recover() == []  # the lease still holds
        journal.hooks.clear()
        clock.advance(11)
        (recovered,) = engine.recover()
    assert recovered.status is Status.COMPLETED
    assert journal.names() == ["reserve", "charge", "charge", "ship"]
    assert len({key for name, key in journal.calls if name == "charge"}) == 1


def test_a_stale_holder_is_fenced_out_after_another_engine_recovers_its_run(db: str) -> None:
    clock = FakeClock()
    paused, release = threading.Event(), threading.Event()

    def pause(_ctx: object) -> None:
        paused.set()
        release.wait(5)

    journal.hooks["charge"] = pause
    first = Engine(db, clock=clock, lease_ttl=10)
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            first.start(Linear, Order("o-22"))
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=run_first)
    worker.start()
    assert paused.wait(5)
    journal.hooks.clear()
    clock.advance(60)  # the first holder's lease has long expired
    with Engine(db, clock=clock, sagas=[Linear]) as second:
        (recovered,) = second.recover()
        assert recovered.status is Status.COMPLETED
        release.set()
        worker.join(5)
        history = second.get(recovered.id).history
    first.close()

    assert len(errors) == 1
    assert isinstance(errors[0], FencedOut)
    assert [h.kind.value for h in history] == ["start", "forward", "forward", "forward"]
    assert [h.epoch for h in history] == [1, 1, 2, 2]


# -- versions -----------------------------------------------------------------------------------


def test_an_instance_of_an_unregistered_version_is_reported_not_driven(db: str) -> None:
    clock = FakeClock()
    with Engine(db, clock=clock) as engine:
        run = engine.start(sagas.Waiting, Order("o-23"))
    with Engine(db, clock=clock, sagas=[Linear]) as other:
        clock.advance(120)
        assert other.recover() == []
        with pytest.raises(SagaNotRegistered, match="has not registered"):
            other.resume(run.id)
        assert other.get(run.id).status is Status.WAITING


# -- reading ------------------------------------------------------------------------------------


def test_list_filters_by_status_saga_key_and_correlation_id(engine: Engine) -> None:
    done = engine.start(Linear, Order("o-24"), key="order:o-24", correlation_id="c-24")
    waiting = engine.start(sagas.Waiting, Order("o-25"), key="order:o-25")

    assert [r.id for r in engine.list(status="waiting")] == [waiting.id]
    assert [r.id for r in engine.list(saga="linear")] == [done.id]
    assert [r.id for r in engine.list(key="order:o-25")] == [waiting.id]
    assert [r.id for r in engine.list(correlation_id="c-24")] == [done.id]
    assert len(engine.list(limit=1)) == 1
    with pytest.raises(InstanceNotFound):
        engine.get("missing")


def test_history_rows_carry_the_correlation_id_and_timings(engine: Engine) -> None:
    run = engine.start(Linear, Order("o-26"), correlation_id="req-26")
    rows = engine.store.history(run.id)
    assert {row.correlation_id for row in rows} == {"req-26"}
    assert all(row.finished_at >= row.started_at for row in rows)
    assert [row.step for row in rows][1:] == ["reserve", "charge", "ship"]


# -- step timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [True, False], ids=["async step", "sync step"])
def test_a_step_that_overruns_its_timeout_fails_and_its_partial_effect_is_undone(
    engine: Engine, asynchronous: bool
) -> None:
    run = engine.start(sagas.Sleepy, sagas.Nap(0.2, asynchronous))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert run.error.type == "StepTimeout"
    assert run.data == sagas.Naps(0)  # the late result was discarded
    assert journal.names() == ["nap", "nap", "undo_nap"]
    assert kinds(engine, run.id) == ["start", "retry", "failure", "compensate"]


def test_a_step_within_its_timeout_completes(engine: Engine) -> None:
    run = engine.start(sagas.Sleepy, sagas.Nap(0.0, False))
    assert (run.status, run.data) == (Status.COMPLETED, sagas.Naps(1))


hung_release = threading.Event()


def call_a_service_that_hangs(ctx: StepContext[Order, Progress]) -> None:
    """A sync call with no timeout of its own, whose server never answers (until released)."""
    journal.hit("hang", ctx)
    hung_release.wait(30)


def forget_the_call(ctx: StepContext[Order, Progress]) -> None:
    journal.hit("undo_hang", ctx)


class CallsAHungService(Saga[Order, Progress]):
    name = "calls-a-hung-service"
    new = State(initial=True)
    called = State(final=True)
    call = new.to(called).run(
        call_a_service_that_hangs,
        undo=forget_the_call,
        undo_on_failure=True,
        timeout=0.2,
        retry=sagas.FAST,
    )


def test_a_sync_step_that_never_returns_is_given_up_on_after_its_timeout(engine: Engine) -> None:
    hung_release.clear()
    try:
        run = engine.start(CallsAHungService, Order("o-hung"))

        # every attempt still hangs: the engine stopped waiting for each after 0.2 s
        assert not hung_release.is_set()
        assert run.status is Status.COMPENSATED
        assert run.error is not None
        assert run.error.type == "StepTimeout"
        assert "left running in the background" in run.error.message
        assert journal.names() == ["hang", "hang", "hang", "undo_hang"]
    finally:
        hung_release.set()  # let the abandoned calls end


# -- leases ---------------------------------------------------------------------------------------


def test_a_long_step_keeps_its_lease_renewed_so_no_one_recovers_it(db: str) -> None:
    started, recovered = threading.Event(), []

    def slow(_ctx: object) -> None:
        started.set()
        time.sleep(0.9)  # three leases long

    journal.hooks["charge"] = slow
    with Engine(db, lease_ttl=0.3) as holder, Engine(db, sagas=[Linear]) as rescuer:
        worker = threading.Thread(target=lambda: holder.start(Linear, Order("o-30")))
        worker.start()
        assert started.wait(5)
        for _ in range(6):
            time.sleep(0.1)
            recovered.extend(rescuer.recover())
        worker.join(5)
        (run,) = holder.list()
    assert recovered == []
    assert run.status is Status.COMPLETED
    assert journal.names().count("charge") == 1


@pytest.mark.parametrize("locks", ["in-process", "sql"])
def test_entity_locks_make_a_concurrent_start_fail_fast_or_wait(db: str, locks: str) -> None:
    from statesaga import InProcessLocks, SqlLocks
    from statesaga.store import SqlStore

    store = SqlStore(db)
    chosen = InProcessLocks() if locks == "in-process" else SqlLocks(store)
    inside, release = threading.Event(), threading.Event()

    def hold(_ctx: object) -> None:
        inside.set()
        release.wait(5)

    journal.hooks["reserve"] = hold
    with Engine(store, locks=chosen) as engine:
        worker = threading.Thread(target=lambda: engine.start(Linear, Order("o-31"), key="k-31"))
        worker.start()
        assert inside.wait(5)
        before = engine.store.dump()
        with pytest.raises(EntityBusy, match="k-31 is busy: another run holds it"):
            engine.start(Linear, Order("o-31"), key="k-31")
        assert engine.store.dump() == before
        journal.hooks.clear()
        threading.Timer(0.1, release.set).start()
        second = engine.start(Linear, Order("o-31"), key="k-31", wait=5)
        worker.join(5)
    assert second.status is Status.COMPLETED
    with Engine(db) as reader:
        assert [r.status for r in reader.list()] == [Status.COMPLETED, Status.COMPLETED]


# -- guards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "state"), [(5000, "big_done"), (10, "small_done")])
def test_guards_choose_the_branch(engine: Engine, amount: int, state: str) -> None:
    run = engine.start(sagas.Branchy, Order("o-40", amount))
    assert (run.status, run.state) == (Status.COMPLETED, state)


def test_a_guard_that_raises_fails_the_run_and_compensates(engine: Engine) -> None:
    run = engine.start(sagas.Branchy, Order("o-41", -1))

    assert run.status is Status.COMPENSATED
    assert run.error is not None
    assert (run.error.type, run.error.retryable) == ("ValueError", False)
    assert journal.names() == ["reserve", "undo_reserve"]


def test_a_retry_delay_ends_even_when_the_clock_stands_still(db: str) -> None:
    journal.fail["charge"] = 1
    with Engine(db, clock=FakeClock()) as engine:  # a frozen clock: only the sleep passes
        run = engine.start(Linear, Order("o-50"))
    assert run.status is Status.COMPLETED
    assert journal.names() == ["reserve", "charge", "charge", "ship"]


# -- the engine's default retry policy ---------------------------------------------------------


@pytest.mark.parametrize(("attempts", "status"), [(1, Status.COMPENSATED), (4, Status.COMPLETED)])
def test_the_engines_default_retry_policy_applies_to_steps_that_declare_none(
    db: str, attempts: int, status: Status
) -> None:
    from statesaga import Retry

    journal.fail["charge"] = 3
    journal.fail["reserve"] = 1  # declares its own policy (3 tries): unaffected
    default = Retry(attempts=attempts, initial_interval=0.001, jitter=0)
    with Engine(db, default_retry=default) as engine:
        run = engine.start(sagas.Undeclared, Order("o-60"))
    assert run.status is status
    assert journal.names().count("charge") == attempts
    assert journal.names().count("reserve") == 2


def test_the_default_retry_policy_comes_from_the_settings(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESAGA_RETRY_ATTEMPTS", "1")
    journal.fail["charge"] = 1
    with Engine.from_settings(database_url=db) as engine:
        run = engine.start(sagas.Undeclared, Order("o-61"))
    assert run.status is Status.COMPENSATED
    assert journal.names().count("charge") == 1
