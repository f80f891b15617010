"""An operator's ways out of ``failed``: resolve and fork, through the engines' public API.

On SQLite and PostgreSQL (the ``db`` fixture). Small sagas from ``sagas``
(``Linear``: reserve → charge → ship, each undoable; ``Pivoted``: reserve →
capture (pivot) → notify; ``Waiting``) record every call in ``journal``, so a
test sees which steps a fork ran again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sagas import Fatal, Linear, Order, Pivoted, Progress, Waiting, journal

from statesaga import (
    AsyncEngine,
    Engine,
    EntityBusy,
    ForkNotAllowed,
    HistoryKind,
    ResolveNotAllowed,
    Status,
)


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()
    journal.hooks.clear()


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    with Engine(db, sagas=[Linear, Pivoted, Waiting]) as engine:
        yield engine


def failed_run(engine: Engine, order: str = "o-1", *, key: str | None = "order:o-1") -> str:
    """A Linear run whose last step fails and whose first compensation cannot be undone."""
    journal.fail.update({"ship": -1, "undo_reserve": -1})
    journal.error.update({"ship": Fatal, "undo_reserve": Fatal})
    run = engine.start(Linear, Order(order), key=key)
    assert run.status is Status.FAILED
    assert run.error is not None
    assert run.error.step == "reserve.undo"
    journal.fail.clear()
    journal.calls.clear()
    return run.id


# -- resolve ----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [Status.COMPENSATED, Status.COMPLETED])
def test_a_failed_run_is_resolved_with_the_note_kept_and_its_key_freed(
    engine: Engine, outcome: Status
) -> None:
    run_id = failed_run(engine)
    before = engine.get(run_id)

    resolved = engine.resolve(
        run_id, outcome=outcome.value, note="released the stock by hand", by="alice"
    )

    assert resolved.status is outcome
    assert resolved.state == before.state  # it ends where it stopped
    assert journal.calls == []  # nothing ran: the operator repaired it
    stored = engine.get(run_id)
    assert stored.status is outcome
    last = stored.history[-1]
    assert (last.kind, last.note, last.by) == (
        HistoryKind.RESOLVED,
        "released the stock by hand",
        "alice",
    )
    assert last.error is None
    # claimed like any operation (its epoch, the fencing token, bumped), then one transition
    assert last.epoch == before.history[-1].epoch + 1
    # the entity key is free again: a new run on it starts
    assert engine.start(Linear, Order("o-2"), key="order:o-1").status is Status.COMPLETED


@pytest.mark.parametrize("status", ["completed", "compensated", "waiting"])
def test_resolve_is_refused_unless_the_run_failed_and_nothing_is_written(
    engine: Engine, status: str
) -> None:
    if status == "waiting":
        run = engine.start(Waiting, Order("o-1"), key="order:o-1")
    else:
        if status == "compensated":
            journal.fail["charge"] = -1
            journal.error["charge"] = Fatal
        run = engine.start(Linear, Order("o-1"))
    assert run.status.value == status
    before = engine.store.dump()

    with pytest.raises(ResolveNotAllowed, match="only a failed run can be resolved") as raised:
        engine.resolve(run.id, outcome="compensated", note="by hand")

    assert raised.value.instance_id == run.id
    assert engine.store.dump() == before


@pytest.mark.parametrize("note", ["", "   "])
def test_resolve_needs_a_note(engine: Engine, note: str) -> None:
    run_id = failed_run(engine)
    before = engine.store.dump()
    with pytest.raises(ResolveNotAllowed, match="a note is required"):
        engine.resolve(run_id, outcome="completed", note=note)
    assert engine.store.dump() == before
    assert engine.get(run_id).status is Status.FAILED


def test_resolve_takes_compensated_or_completed_only(engine: Engine) -> None:
    run_id = failed_run(engine)
    before = engine.store.dump()
    with pytest.raises(ResolveNotAllowed, match="compensated or completed, not running"):
        engine.resolve(run_id, outcome="running", note="no")
    with pytest.raises(ResolveNotAllowed, match="'done' is not a status a run can be resolved"):
        engine.resolve(run_id, outcome="done", note="no")
    assert engine.store.dump() == before


# -- fork -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "ran"), [("reserve", 3), ("charge", 2), ("ship", 1)])
def test_a_completed_run_forks_from_each_step_into_a_linked_run(
    engine: Engine, step: str, ran: int
) -> None:
    original = engine.start(Linear, Order("o-1", amount=7), key="order:o-1")
    assert original.status is Status.COMPLETED
    journal.calls.clear()

    fork = engine.fork(original.id, from_step=step, note="ship it again", by="bob")

    assert fork.id != original.id
    assert fork.status is Status.COMPLETED
    assert (fork.saga, fork.version, fork.key) == ("linear", 1, "order:o-1")
    assert fork.input == original.input
    assert fork.correlation_id == original.correlation_id
    # only the chosen step and those after it ran again, under the fork's own keys
    steps = ["reserve", "charge", "ship"]
    assert journal.names() == steps[-ran:]
    assert all(key.startswith(f"{fork.id}:") for _, key in journal.calls)
    # it started from the original's latest context (the history keeps no context per step)
    assert fork.data == Progress([*original.data.done, *steps[-ran:]])
    first = engine.get(fork.id).history[0]
    assert (first.kind, first.transition, first.link, first.note, first.by) == (
        HistoryKind.FORKED_FROM,
        step,
        original.id,
        "ship it again",
        "bob",
    )
    assert first.from_state == Linear.definition.transitions[step].source
    link = engine.get(original.id).history[-1]
    assert (link.kind, link.transition, link.link) == (HistoryKind.FORKED_TO, step, fork.id)
    assert engine.get(original.id).status is Status.COMPLETED  # the original is unchanged


def test_a_run_that_holds_its_entity_key_is_not_forked(engine: Engine) -> None:
    run_id = failed_run(engine)
    waiting = engine.start(Waiting, Order("o-3"), key="order:o-3")
    before = engine.store.dump()

    for run, step in ((run_id, "ship"), (waiting.id, "reserve")):
        with pytest.raises(ForkNotAllowed, match="holds its entity key") as raised:
            engine.fork(run, from_step=step)
        assert raised.value.step == step
        assert "statesaga resolve" in str(raised.value)
    assert engine.store.dump() == before

    # resolved, it can be: the failed run's key is free, the fork takes it
    engine.resolve(run_id, outcome="compensated", note="undid the reservation by hand")
    fork = engine.fork(run_id, from_step="reserve")
    assert fork.status is Status.COMPLETED
    assert fork.key == "order:o-1"


def test_a_fork_is_refused_while_another_run_holds_the_key(engine: Engine) -> None:
    original = engine.start(Linear, Order("o-1"), key="order:o-1")
    assert original.status is Status.COMPLETED
    failed_run(engine, "o-2", key="order:o-1")  # a later run on the key, failed: still open
    before = engine.store.dump()

    with pytest.raises(EntityBusy):
        engine.fork(original.id, from_step="ship")
    assert engine.store.dump() == before


def test_a_failed_run_without_a_key_forks_from_the_step_it_stopped_at(engine: Engine) -> None:
    journal.fail["ship"] = -1
    journal.error["ship"] = Fatal
    journal.fail["undo_charge"] = -1
    journal.error["undo_charge"] = Fatal
    original = engine.start(Linear, Order("o-1"))
    assert original.status is Status.FAILED
    journal.fail.clear()
    journal.calls.clear()

    fork = engine.fork(original.id, from_step="ship")

    assert fork.status is Status.COMPLETED
    assert journal.names() == ["ship"]
    assert engine.get(original.id).status is Status.FAILED  # still the operator's to resolve


def test_a_step_the_run_never_took_is_refused_with_the_ones_it_did(engine: Engine) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    original = engine.start(Linear, Order("o-1"))
    assert original.status is Status.COMPENSATED
    for step in ("ship", "nope"):
        with pytest.raises(
            ForkNotAllowed, match=r"never took or tried that step.*reserve, charge$"
        ):
            engine.fork(original.id, from_step=step)


def test_a_fork_after_a_step_that_was_undone_is_refused(engine: Engine) -> None:
    journal.fail["ship"] = -1
    journal.error["ship"] = Fatal
    original = engine.start(Linear, Order("o-1"))
    assert original.status is Status.COMPENSATED
    before = engine.store.dump()
    for step in ("charge", "ship"):
        with pytest.raises(
            ForkNotAllowed, match="'reserve', which came before it, was compensated"
        ):
            engine.fork(original.id, from_step=step)
    assert engine.store.dump() == before
    journal.fail.clear()
    journal.calls.clear()
    # from the first undone step, everything runs again
    fork = engine.fork(original.id, from_step="reserve")
    assert fork.status is Status.COMPLETED
    assert journal.names() == ["reserve", "charge", "ship"]


def test_a_fork_never_repeats_a_pivot_that_took_effect(engine: Engine) -> None:
    original = engine.start(Pivoted, Order("o-1"))
    assert original.status is Status.COMPLETED
    before = engine.store.dump()
    for step in ("reserve", "capture"):
        with pytest.raises(
            ForkNotAllowed, match=r"would run pivot 'capture' again.*after it \('notify'\)"
        ):
            engine.fork(original.id, from_step=step)
    assert engine.store.dump() == before
    journal.calls.clear()

    fork = engine.fork(original.id, from_step="notify")
    assert fork.status is Status.COMPLETED
    assert journal.names() == ["notify"]


def test_a_fork_past_the_pivot_goes_forward_only(engine: Engine) -> None:
    original = engine.start(Pivoted, Order("o-1"))
    journal.fail["notify"] = -1
    journal.error["notify"] = Fatal
    fork = engine.fork(original.id, from_step="notify")
    # past the pivot nothing is compensated: the fork stops failed, for an operator
    assert fork.status is Status.FAILED
    assert "undo_reserve" not in journal.names()


def test_a_pivot_whose_outcome_is_unknown_counts_as_taken(engine: Engine) -> None:
    journal.fail["capture"] = -1  # retryable failures: each try may have captured
    original = engine.start(Pivoted, Order("o-1"))
    assert original.status is Status.FAILED
    with pytest.raises(
        ForkNotAllowed, match=r"pivot 'capture' again, and it took effect \(or may have\)"
    ):
        engine.fork(original.id, from_step="capture")


def test_the_async_engine_resolves_and_forks(db: str) -> None:
    async def scenario() -> None:
        async with AsyncEngine(db, sagas=[Linear]) as engine:
            journal.fail.update({"ship": -1, "undo_reserve": -1})
            journal.error.update({"ship": Fatal, "undo_reserve": Fatal})
            run = await engine.start(Linear, Order("o-1"), key="order:o-1")
            assert run.status is Status.FAILED
            with pytest.raises(ForkNotAllowed):
                await engine.fork(run.id, from_step="ship")
            resolved = await engine.resolve(
                run.id, outcome=Status.COMPLETED, note="shipped by hand"
            )
            assert resolved.status is Status.COMPLETED
            journal.fail.clear()
            fork = await engine.fork(run.id, from_step="charge")
            assert fork.status is Status.COMPLETED
            assert [h.kind for h in engine.history(run.id)][-2:] == [
                HistoryKind.RESOLVED,
                HistoryKind.FORKED_TO,
            ]

    asyncio.run(scenario())
