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
import functools
import inspect
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from statesaga.core import HistoryKind, Status
from statesaga.definition import Definition, StepDef, TransitionDef
from statesaga.engine import Engine
from statesaga.errors import (
    ConcurrencyError,
    ConnectionLost,
    NonRetryableError,
    RetryNotAllowed,
    StepTimeout,
    StoreError,
)
from statesaga.locks.memory import InProcessLocks
from statesaga.run import Run
from statesaga.store.sql import SqlStore
from statesaga.testing.plans import Fault, FaultPlan

__all__ = [
    "Crash",
    "FakeClock",
    "InjectedFailure",
    "InjectedFatalFailure",
    "JournalEntry",
    "Outcome",
    "run_plan",
]

#: the lease engines take in the driver, in fake seconds
LEASE_TTL = 30.0
#: how many times the driver lets an operator retry a ``failed`` run (plus one per fault)
OPERATOR_RETRIES = 3
#: a bound on the driver's rounds (recoveries, events), so a runaway run ends the test
MAX_ROUNDS = 200


class Crash(BaseException):
    """The process dies here: like SIGKILL, it escapes every ``except Exception``."""


class InjectedFailure(Exception):
    """A retryable failure injected by a fault plan."""


class InjectedFatalFailure(NonRetryableError):
    """A non-retryable failure injected by a fault plan."""


class FakeClock:
    """A clock that only moves when told: ``clock()`` is the time, ``advance`` moves it.

    >>> clock = FakeClock(100.0)
    >>> clock.advance(5)
    >>> clock()
    105.0
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds

    def move_to(self, when: float) -> None:
        """Move the clock to ``when`` (never backwards)."""
        self.now = max(self.now, when)


@attrs.frozen
class JournalEntry:
    """One call of a step or compensation (``name`` is ``t`` or ``t.undo``), or a note."""

    instance_id: str
    name: str
    idempotency_key: str
    attempt: int
    result: str
    """``ok``, ``raised``, the injected fault's kind, or a note of the driver."""
    ran: bool = True
    """whether the user's function body ran (an injected error or crash before it: no)."""

    def __str__(self) -> str:
        ran = "" if self.ran else " (body not run)"
        return f"{self.instance_id[:8]} {self.name} #{self.attempt}: {self.result}{ran}"


@attrs.frozen
class Outcome:
    """What happened in one run of a plan."""

    definition: Definition
    plan: FaultPlan
    runs: tuple[Run, ...]
    """every run of the saga started under the plan, with its history, oldest first."""
    journal: tuple[JournalEntry, ...]
    world: Any
    """what ``setup`` returned: the user's domain, for the invariant."""
    notes: tuple[str, ...] = ()
    """violations the driver saw while running (e.g. two open runs on one key)."""
    sent: tuple[tuple[str, str, str, float], ...] = ()
    """(run id, event, event id, when) of every event sent without an error."""

    @property
    def run(self) -> Run:
        """The first run (the one the plan started)."""
        return self.runs[0]

    def scenario(self) -> str:
        """A readable account: the saga's steps, the plan, the calls and each history."""
        lines = [f"saga {self.definition.name!r}: steps"]
        for t in self.definition.transitions.values():
            if t.step is None:
                continue
            marks = [m for m, on in (("pivot", t.step.pivot), ("undo", t.compensatable)) if on]
            lines.append(f"  {t.name}: {t.source} -> {t.target} {' '.join(marks)}".rstrip())
        lines.append(f"plan: {self.plan}")
        lines.append("calls:")
        lines.extend(f"  {entry}" for entry in self.journal)
        for run in self.runs:
            lines.append(f"run {run.id[:8]} ended {run.status.value} in {run.state!r}:")
            for h in run.history:
                what = h.transition or ""
                error = f" ({h.error.type}: {h.error.message})" if h.error else ""
                lines.append(
                    f"  {h.kind.value:<18} {what:<12} {h.from_state} -> {h.to_state}{error}"
                )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


@attrs.define
class _Harness:
    """The mutable state of one run of a plan."""

    definition: Definition
    plan: FaultPlan
    url: str
    clock: FakeClock
    saga_input: Any
    key: str | None
    payloads: dict[str, Any]
    left: list[int] = attrs.Factory(list)
    journal: list[JournalEntry] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    engines: list[Engine] = attrs.Factory(list)
    driven: Definition | None = None
    early_sent: set[str] = attrs.Factory(set)
    commit_crash: set[str] = attrs.Factory(set)
    resources: tuple[object, ...] = ()
    locks: InProcessLocks = attrs.Factory(InProcessLocks)
    """the entity locks every engine of the plan shares, as processes share Redis"""
    lock_rounds: int = 0
    sent: list[tuple[str, str, str, float]] = attrs.Factory(list)
    """(run, event, event id, when) of every event sent without an error"""

    def engine(self) -> Engine:
        assert self.driven is not None
        # a holder paused inside a step's transaction keeps SQLite's write lock: the
        # engines that race it give up quickly (and retry) rather than wait 10 s each
        store = SqlStore(self.url, busy_timeout=0.2)
        engine = Engine(
            store,
            sagas=[self.driven],
            locks=self.locks,
            lease_ttl=LEASE_TTL,
            clock=self.clock,
            max_inline_sleep=0.0,
            resources=self.resources,
        )
        self._arm_commit_crashes(engine)
        self.engines.append(engine)
        return engine

    def abandon(self, engine: Engine) -> None:
        """The process died: its leases run out; nothing it held is released."""
        engine.close()
        self.clock.advance(LEASE_TTL + 1)

    # -- fault bookkeeping ---------------------------------------------------------------

    def take(self, name: str, kinds: tuple[str, ...]) -> Fault | None:
        """The first fault of one of ``kinds`` on ``name`` with calls left (and use one)."""
        for index, fault in enumerate(self.plan.faults):
            if fault.target == name and fault.kind in kinds and self.left[index] > 0:
                self.left[index] -= 1
                return fault
        return None

    def note(self, ctx: Any, name: str, result: str, *, ran: bool) -> None:
        self.journal.append(
            JournalEntry(ctx.instance_id, name, ctx.idempotency_key, ctx.attempt, result, ran)
        )

    # -- wrapping the definition ------------------------------------------------------------

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def faulty(ctx: Any) -> Any:
            self.before_body(ctx, name)
            fault = self.take(name, ("retryable", "fatal", "timeout", "crash_before"))
            if fault is not None:
                self.note(ctx, name, fault.kind, ran=False)
                if fault.kind == "crash_before":
                    raise Crash(f"crash before {name}")
                if fault.kind == "timeout":
                    raise StepTimeout(f"{name} timed out (injected)")
                if fault.kind == "fatal":
                    raise InjectedFatalFailure(f"{name} failed for good (injected)")
                raise InjectedFailure(f"{name} failed (injected)")
            try:
                value = function(ctx)
            except Exception:
                self.note(ctx, name, "raised", ran=True)
                raise
            if inspect.isawaitable(value):
                return self._after_async(ctx, name, value)
            self.after_body(ctx, name)
            return value

        return faulty

    async def _after_async(self, ctx: Any, name: str, awaitable: Any) -> Any:
        try:
            value = await awaitable
        except Exception:
            self.note(ctx, name, "raised", ran=True)
            raise
        self.after_body(ctx, name)
        return value

    def after_body(self, ctx: Any, name: str) -> None:
        if self.take(name, ("effect_then_raise",)) is not None:
            self.note(ctx, name, "effect_then_raise", ran=True)
            raise InjectedFailure(f"{name} took effect, then failed (injected)")
        if self.take(name, ("crash_after",)) is not None:
            self.note(ctx, name, "crash_after", ran=True)
            raise Crash(f"crash after {name}")
        if self.take(name, ("crash_after_commit",)) is not None:
            self.commit_crash.add(f"{ctx.instance_id}:{name}")
        self.note(ctx, name, "ok", ran=True)

    def before_body(self, ctx: Any, name: str) -> None:
        """Races: an early event, a duplicate start, a lost lease, while this call runs."""
        if not name.endswith(".undo"):
            self._send_early(ctx)
        if self.take(name, ("duplicate_start",)) is not None:
            self.note(ctx, name, "duplicate start races it", ran=False)
            other = self.engine()
            try:
                other.start(self.definition.name, self.saga_input, key=self.key)
            except ConcurrencyError as error:
                self.note(ctx, name, f"duplicate start refused: {type(error).__name__}", ran=False)
            except Crash:
                self.abandon(other)
            self._check_one_open()
        if self.take(name, ("lease_loss",)) is not None:
            self.note(ctx, name, "holder paused past its lease; another engine recovers", ran=False)
            self.clock.advance(LEASE_TTL + 1)
            other = self.engine()
            try:
                other.recover()
            except Crash:
                self.abandon(other)
            self._check_one_open()

    def _send_early(self, ctx: Any) -> None:
        for planned in self.plan.events:
            if planned.mode != "early" or planned.event in self.early_sent:
                continue
            self.early_sent.add(planned.event)
            other = self.engine()
            try:
                payload = self.payload(planned.event, other.get(ctx.instance_id))
                self.send(other, planned.event, payload, ctx.instance_id)
            except Crash:
                self.abandon(other)

    def send(self, engine: Engine, event: str, payload: Any, instance_id: str, **more: Any) -> None:
        """Send an event as a webhook would; a race answered with an error is a broken promise."""
        try:
            delivery = engine.send(event, payload, instance_id=instance_id, **more)
        except ConcurrencyError as error:
            self.notes.append(
                f"sending {event!r} raised {type(error).__name__} ({error}): a busy or racing "
                "run must never be an error to the sender, and the event was lost"
            )
            return
        self.sent.append((instance_id, event, delivery.event_id, self.clock()))

    def hold(self, row: Any) -> Callable[[], None]:
        """Someone else (a storefront request) holds the run's entity lock until released."""
        key = row.entity_key or f"instance:{row.id}"
        lease = self.locks.try_acquire(key, "storefront", LEASE_TTL, self.clock())
        if lease is None:
            return lambda: None
        return lambda: self.locks.release(lease)

    def payload(self, event: str, run: Run) -> Any:
        """The payload to send ``run`` with ``event``: as given (a value, or a function of
        the run, for a payload that depends on what the run recorded), or the default."""
        if event in self.payloads:
            given = self.payloads[event]
            return given(run) if callable(given) else given
        for t in self.definition.transitions.values():
            if t.event == event and t.payload_type is not None:
                try:
                    return t.payload_type()
                except TypeError as error:
                    raise TypeError(
                        f"cannot make a payload for event {event!r} ({error}); pass "
                        f"payloads={{{event!r}: ...}}"
                    ) from None
        return None

    def _check_one_open(self) -> None:
        if self.key is None:
            return
        engine = self.engines[-1]
        open_runs = [r for r in engine.list(key=self.key) if r.status.is_open]
        if len(open_runs) > 1:
            self.notes.append(f"{len(open_runs)} open runs on key {self.key!r}")

    def instrument(self) -> Definition:
        """The definition with every step and compensation wrapped (and no retry jitter)."""
        transitions: dict[str, TransitionDef] = {}
        for name, t in self.definition.transitions.items():
            if t.step is not None:
                step: StepDef = t.step
                step = attrs.evolve(
                    step,
                    function=self.wrap(name, step.function),
                    compensation=None
                    if step.compensation is None
                    else self.wrap(f"{name}.undo", step.compensation),
                    retry=attrs.evolve(step.retry, jitter=0.0),
                    compensation_retry=attrs.evolve(step.compensation_retry, jitter=0.0),
                )
                t = attrs.evolve(t, step=step)
            transitions[name] = t
        d = self.definition
        return attrs.evolve(
            d,
            transitions=transitions,
            automatic_from={
                s: tuple(transitions[t.name] for t in ts) for s, ts in d.automatic_from.items()
            },
            events_from={
                s: {e: transitions[t.name] for e, t in ts.items()}
                for s, ts in d.events_from.items()
            },
            timeout_from={s: transitions[t.name] for s, t in d.timeout_from.items()},
        )

    def _arm_commit_crashes(self, engine: Engine) -> None:
        """Make ``engine`` die right after committing a transition the plan names."""
        store: Any = engine.store
        transition, transaction = store.transition, store.transaction
        pending: list[str] = []

        def hit(instance_id: str, rows: Any) -> str | None:
            for row in rows:
                name = row.transition
                if row.kind == HistoryKind.COMPENSATE.value:
                    name = f"{name}.undo"
                elif row.kind not in ("forward", "event", "timeout"):
                    continue
                marker = f"{instance_id}:{name}"
                if marker in self.commit_crash:
                    self.commit_crash.discard(marker)
                    return marker
            return None

        def lost(rows: Any) -> str | None:
            for row in rows:
                name = row.transition
                if row.kind == HistoryKind.COMPENSATE.value:
                    name = f"{name}.undo"
                elif row.kind not in ("forward", "event", "timeout"):
                    continue
                if self.take(name, ("connection_lost",)) is not None:
                    return str(name)
            return None

        def transition_then_crash(*args: Any, **kwargs: Any) -> Any:
            instance_id, rows = args[0], args[4]
            connection = args[5] if len(args) > 5 else None
            dropped = lost(rows)
            if dropped is not None:
                self.journal.append(
                    JournalEntry(instance_id, dropped, "", 0, "connection_lost", False)
                )
                raise ConnectionLost(f"the database connection died writing {dropped} (injected)")
            result = transition(*args, **kwargs)
            marker = hit(instance_id, rows)
            if marker is not None:
                if connection is not None:  # a transactional step's: commits as its block exits
                    pending.append(marker)
                else:
                    raise Crash(f"crash after committing {marker}")
            return result

        @contextlib.contextmanager
        def transaction_then_crash() -> Iterator[Any]:
            with transaction() as connection:
                yield connection
            if pending:
                raise Crash(f"crash after committing {pending.pop()}")

        store.transition = transition_then_crash
        store.transaction = transaction_then_crash


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
    harness.driven = harness.instrument()
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
    # a worker's last pass settles what came in as the runs ended (late events, late cancels)
    with contextlib.suppress(ConcurrencyError, StoreError):
        engine.recover()
    return tuple(engine.get(r.id) for r in reversed(engine.list(limit=1000)))


def _deliver(h: _Harness, engine: Engine, row: Any) -> bool:
    """Deliver the event a waiting run accepts as the plan says; ``True`` if something was sent."""
    definition = h.definition
    accepted = definition.events_in(row.state)
    for event in accepted:
        mode = h.plan.mode_of(event)
        if mode == "never":
            continue
        if mode == "late":
            wake = row.due_at if row.due_at is not None else h.clock() + 3600
            h.clock.move_to(wake)
        payload = h.payload(event, engine.get(row.id))
        if mode == "burst":
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


def _burst(h: _Harness, event: str, payload: Any, instance_id: str) -> None:
    """Four deliveries of one event at once, from four engines (two share an event id)."""
    engines = [h.engine() for _ in range(4)]
    gate = threading.Barrier(len(engines))
    crashed: list[Engine] = []

    def deliver(number: int) -> None:
        gate.wait()
        try:
            h.send(engines[number], event, payload, instance_id, event_id=f"burst-{number // 2}")
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
        timed = h.definition.states[row.state].timeout is not None or row.deadline is not None
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
