"""Run a definition under a fault plan against a real store, crashes included.

:func:`run_plan` wraps the definition's steps and compensations (a new
definition; the user's saga class is left alone) so that they fail, crash or
race as the plan says, runs the saga on a fake clock with engines on one
database, and plays every role around it: the crashed process is abandoned and
a fresh engine recovers once the lease has expired, the clock moves to each
retry and timeout, events arrive as planned, and an operator retries runs that
ended ``failed``. The :class:`Outcome` holds the runs with their histories and
the journal of every step and compensation call.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from statesaga.core import Status
from statesaga.definition import Definition
from statesaga.engine import Engine
from statesaga.errors import ConcurrencyError, RetryNotAllowed, StoreError
from statesaga.run import Run
from statesaga.runtime.gather import BRANCH_THREADS
from statesaga.testing._family import family
from statesaga.testing._faults import instrument
from statesaga.testing._harness import _Harness
from statesaga.testing._outcome import (
    BRANCH_JOIN_SECONDS,
    LEASE_TTL,
    MAX_ROUNDS,
    OPERATOR_RETRIES,
    SETTLE_PASSES,
    SETTLE_PAUSE,
    Crash,
    FakeClock,
    InjectedFailure,
    InjectedFatalFailure,
    JournalEntry,
    Outcome,
)
from statesaga.testing.plans import FaultPlan

__all__ = [
    "Crash",
    "FakeClock",
    "InjectedFailure",
    "InjectedFatalFailure",
    "JournalEntry",
    "Outcome",
    "run_plan",
]


def run_plan(
    definition: Definition | type,
    plan: FaultPlan,
    *,
    input: Any,
    database: str | None = None,
    setup: Callable[..., Any] | None = None,
    key: str | Callable[[Any], str | None] | None = None,
    payloads: dict[str, Any] | None = None,
    resources: Iterable[object] | Callable[[Any], Iterable[object]] | None = None,
) -> Outcome:
    """Start ``definition`` with ``input`` under ``plan`` and drive every run it leads to
    until each is terminal (or the driver gives up); return what happened.

    Args:
        definition: a saga class or its definition.
        plan: the faults to inject (see :func:`~statesaga.testing.fault_plans`).
        input: the saga's input.
        database: a database URL whose store is empty (default: a new temporary
            SQLite file, removed afterwards).
        setup: called first, with the database URL if it takes an argument (to
            create the domain's own tables beside the store's); what it returns is
            ``Outcome.world``.
        key: the entity key of the run, or a function of the input that gives it.
        payloads: the payload to send with each event: a value, or a function of the
            waiting run (default: the payload type's default instance).
        resources: what the engines hand the steps (``Engine(resources=...)``), or a
            function of the world that gives them (e.g. the world's payment provider).
    """
    definition = definition if isinstance(definition, Definition) else definition.definition  # type: ignore[attr-defined]
    entity_key = key(input) if callable(key) else key
    directory = None
    if database is None:
        directory = tempfile.mkdtemp(prefix="statesaga-plan-")
        database = f"sqlite:///{os.path.join(directory, 'plan.db')}"
    try:
        world = _set_up(setup, database)
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    given = resources(world) if callable(resources) else resources
    harness = _Harness(
        definition,
        plan,
        database,
        FakeClock(),
        input,
        entity_key,
        dict(payloads or {}),
        resources=tuple(given or ()),
    )
    harness.left = [fault.times for fault in plan.faults]
    harness.lock_rounds = plan.lock_held
    harness.driven = instrument(harness)
    harness.family = family(harness.definition)
    try:
        runs = _drive(harness)
    finally:
        for engine in harness.engines:
            engine.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return Outcome(
        definition,
        plan,
        runs,
        tuple(harness.journal),
        world,
        tuple(harness.notes),
        tuple(harness.sent),
    )


def _set_up(setup: Callable[..., Any] | None, database: str) -> Any:
    """Call ``setup``, with the database URL when it takes an argument."""
    if setup is None:
        return None
    try:
        takes_url = bool(inspect.signature(setup).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        takes_url = False
    return setup(database) if takes_url else setup()


def _drive(h: _Harness) -> tuple[Run, ...]:
    engine = h.engine()
    try:
        engine.start(h.definition.name, h.saga_input, key=h.key, deadline=h.plan.deadline)
    except (ConcurrencyError, StoreError):
        pass  # fenced out, or its connection died: the run goes on (after its lease)
    except Crash:
        h.abandon(engine)
        engine = h.engine()
    return _finish(h, engine)


def _finish(h: _Harness, engine: Engine) -> tuple[Run, ...]:
    """Play clock, recovery, events and operator until every run is terminal."""
    retries: dict[str, int] = {}
    waits_seen: dict[tuple[str, str, int], int] = {}
    for _ in range(MAX_ROUNDS):
        rows = [engine.store.get(r.id) for r in engine.list(limit=1000)]
        live = [r for r in rows if r is not None and not Status(r.status).is_terminal]
        _check_liveness(h, live)
        failed = [r for r in rows if r is not None and r.status == Status.FAILED.value]
        patience = OPERATOR_RETRIES + sum(f.times for f in h.plan.faults)
        if not live and not [r for r in failed if retries.get(r.id, 0) < patience]:
            break
        try:
            if not live:  # an operator fixes the cause and retries
                row = failed[0]
                retries[row.id] = retries.get(row.id, 0) + 1
                with contextlib.suppress(RetryNotAllowed, ConcurrencyError):
                    engine.retry(row.id)
                continue
            waiting = [
                r for r in live if r.status == Status.WAITING.value and r.lease_owner is None
            ]
            for row in waiting:
                visit = (row.id, row.state, row.version)
                if waits_seen.get(visit):
                    continue
                waits_seen[visit] = 1
                if _deliver(h, engine, row):
                    break
            else:
                if not _recover(h, engine, live):
                    _advance_to_next_due(h, live)
        except (ConcurrencyError, StoreError):
            continue  # a paused holder fenced out, a busy key, a lost connection: go on
        except Crash:
            h.abandon(engine)
            engine = h.engine()
    else:
        h.notes.append(f"the driver gave up after {MAX_ROUNDS} rounds")
    # a simulated crash leaves the dead engine's branch threads running (a real crash ends
    # them with the process): let them end before the last passes and the checks, so that
    # none acts on the runs after the plan (or on the next plan's, in a shared database)
    _join_branch_threads()
    # a worker's last passes settle what came in as the runs ended (late events, late
    # cancels); as a worker that polls, it looks again while an ended run still has an entry
    # pending
    for _ in range(SETTLE_PASSES):
        with contextlib.suppress(ConcurrencyError, StoreError):
            engine.recover()
        if not _pending_after_the_end(engine):
            break
        time.sleep(SETTLE_PAUSE)
    runs = [engine.get(r.id) for r in reversed(engine.list(limit=1000))]
    # the plan's own runs first (``Outcome.run``), then the child runs they started
    return tuple(sorted(runs, key=lambda run: run.parent_id is not None))


def _join_branch_threads() -> None:
    """Wait (a bounded while) for every engine's parallel-branch threads to end."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and thread.name.startswith(BRANCH_THREADS):
            thread.join(BRANCH_JOIN_SECONDS)


def _pending_after_the_end(engine: Engine) -> bool:
    """Whether an ended run still has an inbox entry nobody settled."""
    return any(
        engine.store.pending(run.id) for run in engine.list(limit=1000) if run.status.is_terminal
    )


def _deliver(h: _Harness, engine: Engine, row: Any) -> bool:
    """Deliver the event a waiting run accepts as the plan says; ``True`` if something was sent."""
    if (row.machine or {}).get("pending") is not None:
        return False  # it waits for its child run, which wakes it when it ends
    definition = h.definition_of(row.saga)
    accepted = definition.events_in(row.state)
    for event in accepted:
        mode = h.plan.mode_of(event)
        if mode == "never":
            continue
        if mode == "late":
            wake = row.due_at if row.due_at is not None else h.clock() + 3600
            h.clock.move_to(wake)
        payload = h.payload(event, engine.get(row.id))
        if mode == "refused" and event not in h.refused_sent:
            h.refused_sent.add(event)
            _refuse(h, engine, event, payload, row)
        elif mode == "burst":
            _burst(h, event, payload, row.id)
        elif mode == "while_locked":
            release = h.hold(row)  # the storefront retries complete meanwhile
            try:
                h.send(engine, event, payload, row.id)
            finally:
                release()
        else:
            for _ in range(2 if mode == "twice" else 1):
                # a second (or late) delivery is recorded as not accepted: that is the point
                h.send(engine, event, payload, row.id)
        return True
    if row.due_at is None and row.deadline is None:
        # nothing will ever come: an operator cancels the run
        with contextlib.suppress(ConcurrencyError):
            engine.cancel(row.id, reason="no event arrived")
        return True
    return False


def _refuse(h: _Harness, engine: Engine, event: str, payload: Any, row: Any) -> None:
    """A delivery the event's guards refuse: the run must keep waiting, its wait not restarted."""
    h.refusing = (row.id, event)
    try:
        h.send(engine, event, payload, row.id)
    finally:
        h.refusing = None
    after = engine.store.get(row.id)
    if after is None or after.status != Status.WAITING.value or after.state != row.state:
        return  # not refused after all (a fallback took it, or time won)
    if row.machine.get("measure"):
        return  # its timeout was still to be measured (a crash right after it began waiting)
    if after.due_at != row.due_at:
        h.notes.append(
            f"run {row.id[:8]}: a refused {event!r} moved its due time from {row.due_at} to "
            f"{after.due_at}: the wait must keep its original timeout"
        )


def _burst(h: _Harness, event: str, payload: Any, instance_id: str) -> None:
    """Four deliveries of one event at once, from four engines (two share an event id)."""
    engines = [h.engine() for _ in range(4)]
    gate = threading.Barrier(len(engines))
    crashed: list[Engine] = []

    def deliver(number: int) -> None:
        gate.wait()
        try:
            h.send(engines[number], event, payload, instance_id, event_id=f"burst-{number // 2}")
        except (ConcurrencyError, StoreError):
            pass  # recorded (or refused before), and the run goes on, as in the main loop
        except Crash:
            crashed.append(engines[number])

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in crashed:
        h.abandon(engine)


def _recover(h: _Harness, engine: Engine, live: list[Any]) -> bool:
    """Recover what is due; the plan may have someone else hold the runs' locks meanwhile."""
    if h.lock_rounds <= 0:
        return bool(engine.recover())
    h.lock_rounds -= 1
    releases = [h.hold(row) for row in live]
    try:
        recovered = engine.recover()
    finally:
        for release in releases:
            release()
    del recovered  # whatever it did, the clock moves on: the storefront's request is over
    h.clock.advance(1.0)
    return True


def _check_liveness(h: _Harness, live: list[Any]) -> None:
    """Every run that is not terminal has a live lease or a due time (or waits for an event)."""
    for row in live:
        if row.lease_owner is not None or row.due_at is not None:
            continue
        machine = row.machine or {}
        timed = (
            h.definition_of(row.saga).states[row.state].timeout is not None
            or machine.get("wake_at") is not None  # a timeout measured for this run
            or bool(machine.get("measure"))  # one still to be measured
            or row.deadline is not None
        )
        if row.status != Status.WAITING.value or timed:
            note = (
                f"run {row.id[:8]} is {row.status} in {row.state!r} with neither a lease nor a "
                "due time: no worker will ever pick it up"
            )
            if note not in h.notes:
                h.notes.append(note)


def _advance_to_next_due(h: _Harness, live: list[Any]) -> None:
    """Move the clock to the next moment a live run needs work (a retry, a timeout,
    a deadline, an expired lease)."""
    times = []
    for row in live:
        if row.lease_owner is not None and row.lease_expires_at is not None:
            times.append(row.lease_expires_at)
        elif row.due_at is not None:
            times.append(row.due_at)
        if row.deadline is not None:
            times.append(row.deadline)
    future = [t for t in times if t > h.clock()]
    h.clock.move_to(min(future) if future else h.clock() + LEASE_TTL + 1)
