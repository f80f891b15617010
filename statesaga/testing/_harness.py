"""The harness of one run of a plan: its state, its engines, and the races it plays.

Engines share one database and one set of entity locks, as processes share
PostgreSQL and Redis; each engine is armed to die right after committing a
transition the plan names, or to lose its connection as it writes one. Around
a step's call the harness sends early events, starts duplicates and lets a
holder's lease lapse while another engine recovers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from statesaga.core import HistoryKind
from statesaga.definition import Definition
from statesaga.engine import Engine
from statesaga.errors import ConcurrencyError, ConnectionLost, StoreBusy
from statesaga.locks.memory import InProcessLocks
from statesaga.run import Run
from statesaga.store.base import HistoryRow
from statesaga.store.hooks import StoreWrite, WriteMoment
from statesaga.store.sql import SqlStore
from statesaga.testing._outcome import LEASE_TTL, Crash, FakeClock, JournalEntry
from statesaga.testing.plans import Fault, FaultPlan

__all__ = ["_Harness"]

REDELIVERIES = 10
"""How often a sender delivers an event again, with its id, while SQLite stays busy."""


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
    refusing: tuple[str, str] | None = None
    """(run, event) whose delivery the guards refuse now (a ``refused`` delivery)"""
    refused_sent: set[str] = attrs.Factory(set)
    family: dict[str, Definition] = attrs.Factory(dict)
    """the saga and the sagas its child steps start, by name"""

    def definition_of(self, saga: str) -> Definition:
        """The definition of a run of ``saga`` (the saga's, or a child saga's)."""
        return self.family.get(saga, self.definition)

    def engine(self) -> Engine:
        assert self.driven is not None
        # a holder paused inside a step's transaction keeps SQLite's write lock: the
        # engines that race it give up quickly (and retry) rather than wait 10 s each
        store = SqlStore(self.url, busy_timeout=0.2, hook=self._on_write)
        engine = Engine(
            store,
            sagas=[self.driven],
            locks=self.locks,
            lease_ttl=LEASE_TTL,
            clock=self.clock,
            max_inline_sleep=0.0,
            resources=self.resources,
        )
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
        """Send an event as a webhook would; a race answered with an error is a broken promise.

        A send that outwaited the (short) busy timeout recorded nothing and says so;
        the sender delivers it again with the same event id, as a provider redelivers
        a webhook its receiver answered with an error.
        """
        more.setdefault("event_id", uuid.uuid4().hex)
        for delivered in range(1, REDELIVERIES + 1):
            try:
                delivery = engine.send(event, payload, instance_id=instance_id, **more)
            except ConcurrencyError as error:
                self.notes.append(
                    f"sending {event!r} raised {type(error).__name__} ({error}): a busy or "
                    "racing run must never be an error to the sender, and the event was lost"
                )
                return
            except StoreBusy:
                if delivered == REDELIVERIES:
                    raise
                continue
            self.sent.append((instance_id, event, delivery.event_id, self.clock()))
            return

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
        takers = [
            t
            for d in (self.family or {"": self.definition}).values()
            for t in d.transitions.values()
        ]
        for t in takers:
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

    def _on_write(self, moment: WriteMoment, write: StoreWrite) -> None:
        """Every engine's store hook: the plan's lost connections and commit crashes.

        A transition the plan names loses its connection as it is written (nothing
        of it commits), or its engine dies right after it committed. A start's own
        rows name nothing; a run whose first step is transactional is inserted with
        that step's transition, which the plan may name.
        """
        if moment is WriteMoment.BEFORE_WRITE:
            for name in _record_names(write.history):
                if self.take(name, ("connection_lost",)) is not None:
                    self.journal.append(
                        JournalEntry(write.instance_id, name, "", 0, "connection_lost", False)
                    )
                    raise ConnectionLost(f"the database connection died writing {name} (injected)")
        elif moment is WriteMoment.COMMITTED:
            for name in _record_names(write.history):
                marker = f"{write.instance_id}:{name}"
                if marker in self.commit_crash:
                    self.commit_crash.discard(marker)
                    raise Crash(f"crash after committing {marker}")


def _record_names(rows: Iterable[HistoryRow]) -> Iterator[str]:
    """The names a plan gives the records of a write: ``t`` for a transition, ``t.undo``."""
    for row in rows:
        if row.kind == HistoryKind.COMPENSATE.value:
            yield f"{row.transition}.undo"
        elif row.kind in ("forward", "event", "timeout"):
            yield str(row.transition)
