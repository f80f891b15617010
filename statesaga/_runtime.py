"""What the sync and async engines share: the registry, persistence and the drive loop.

The drive loop is written once, as generators that *yield* the two things an
engine does differently (call a user function; pause) and receive the
result. ``Engine`` pumps them with plain calls and ``time.sleep``;
``AsyncEngine`` awaits coroutines and ``asyncio.sleep``. Store and lock calls
are made directly: they are short and the same for both.
"""

from __future__ import annotations

import builtins
import inspect
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import attrs

from statesaga.context import Resources, StepContext
from statesaga.core import (
    BranchChosen,
    CancelRequested,
    ChooseBranch,
    CompensationFailed,
    CompensationSucceeded,
    Done,
    ErrorInfo,
    EventArrived,
    EventFit,
    Finish,
    HistoryKind,
    Interpreter,
    Next,
    Outcome,
    Record,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    Status,
    StepFailed,
    StepSucceeded,
    Wait,
)
from statesaga.definition import Definition, TransitionDef
from statesaga.delivery import Delivery, DeliveryStatus, InboxEntry
from statesaga.errors import (
    ConnectionLost,
    DuplicateStart,
    EntityBusy,
    EventNotAllowed,
    FencedOut,
    InputError,
    InstanceNotFound,
    SagaNotRegistered,
    StateSagaError,
    StepTimeout,
)
from statesaga.locks.base import AsyncLocks, Lease, Locks
from statesaga.retry import Retry
from statesaga.run import HistoryEntry, Run
from statesaga.serde import converter, structure
from statesaga.store.base import HistoryRow, InboxRow, InstanceRow, Settle, Store, Write
from statesaga.store.sql import SqlStore

if TYPE_CHECKING:
    from typing import Self

    from statesaga.observability import Observer
    from statesaga.settings import Settings

__all__ = ["RECOVERY_BATCH", "Call", "LockOp", "Pause", "Response", "Runtime"]

log = logging.getLogger("statesaga.engine")

#: how many runs ``recover`` claims at a time (each batch's leases start together)
RECOVERY_BATCH = 20

#: seconds a start with an idempotency key waits for a racing start of the same key
IDEMPOTENT_WAIT = 2.0

#: seconds before a run whose entity lock was busy at recovery is looked at again
BUSY_RETRY = 0.5

SagaRef: TypeAlias = "type | Definition | str"


@attrs.frozen
class Call:
    """Request to the engine: call ``function(ctx)`` within ``timeout`` seconds."""

    function: Callable[..., Any]
    ctx: StepContext[Any, Any]
    timeout: float | None


@attrs.frozen
class Pause:
    """Request to the engine: sleep ``seconds``."""

    seconds: float


@attrs.frozen
class LockOp:
    """Request to the engine: try to acquire a lease (the call is awaited if it is async)."""

    key: str


@attrs.frozen
class Response:
    """What a call gave: its value, or the exception it raised (``StepTimeout`` if too slow)."""

    value: Any = None
    error: BaseException | None = None


Request = Call | Pause | LockOp
Driver: TypeAlias = Generator[Request, Any, Any]


@attrs.define
class _Active:
    """A run this engine holds while it works on it."""

    definition: Definition
    core: Interpreter
    id: str
    version: int
    epoch: int
    snapshot: Snapshot
    input: Any
    correlation_id: str
    key: str | None
    lease: Lease | None = None
    leased: bool = True
    encoded_data: Any = None  # the data object whose JSON is ``encoded_context``
    encoded_context: str = "null"
    output: Any = None
    created_at: float = 0.0
    updated_at: float = 0.0
    renewed_at: float = 0.0
    step_deadline: float | None = None
    lost: bool = False


@attrs.frozen
class _Kept:
    """What a transition changes on a held run, kept to put back if its commit failed."""

    version: int
    snapshot: Snapshot
    leased: bool
    updated_at: float
    renewed_at: float
    output: Any
    encoded_data: Any
    encoded_context: str

    @classmethod
    def of(cls, run: _Active) -> _Kept:
        return cls(
            run.version,
            run.snapshot,
            run.leased,
            run.updated_at,
            run.renewed_at,
            run.output,
            run.encoded_data,
            run.encoded_context,
        )

    def restore(self, run: _Active) -> None:
        run.version, run.snapshot, run.leased = self.version, self.snapshot, self.leased
        run.updated_at, run.renewed_at, run.output = self.updated_at, self.renewed_at, self.output
        run.encoded_data, run.encoded_context = self.encoded_data, self.encoded_context


class _Discard(Exception):
    """Roll back a transactional step's transaction and report ``outcome`` instead."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Runtime:
    """The engine's state and its I/O-agnostic operations (see ``Engine``)."""

    _accepts_async_locks = False

    def __init__(
        self,
        database: str | Store | None = None,
        *,
        sagas: Iterable[type | Definition] = (),
        locks: Locks | AsyncLocks | None = None,
        lease_ttl: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        max_inline_sleep: float = 5.0,
        default_deadline: float | None = None,
        default_retry: Retry | None = None,
        observer: Observer | None = None,
        resources: Iterable[object] = (),
    ) -> None:
        if database is None:
            # nothing said: the settings decide (environment, statesaga.toml, pyproject),
            # so a deployment moves to PostgreSQL and Redis without a code change
            from statesaga.settings import Settings

            settings = Settings.load()
            database = settings.store()
            if locks is None and settings.redis_url is not None:
                from statesaga.locks import redis as redis_locks

                kind = redis_locks.AsyncRedisLocks if self._accepts_async_locks else None
                locks = (kind or redis_locks.RedisLocks)(settings.redis_url)
            if default_deadline is None:
                default_deadline = settings.default_deadline
            if default_retry is None:
                default_retry = settings.retry
        self.store: Store = SqlStore(database) if isinstance(database, str) else database
        # None: the store's own lease on the instance row (claim with expiry, epoch bump)
        # is the only lock, and the unique open-instance index makes a busy key fail fast
        self.locks = locks
        is_async = locks is not None and inspect.iscoroutinefunction(locks.try_acquire)
        if is_async and not self._accepts_async_locks:
            raise StateSagaError(
                f"{type(locks).__name__} is asynchronous: use it with AsyncEngine, or "
                "use the synchronous variant (e.g. RedisLocks) with Engine"
            )
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl={lease_ttl!r} must be positive")
        self.lease_ttl = lease_ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.max_inline_sleep = max_inline_sleep
        self.default_deadline = default_deadline
        self.default_retry = default_retry
        # None (the default) skips every hook call: nothing to pay on the hot path
        self.observer = observer
        self.resources = Resources(resources)
        self._definitions: dict[tuple[str, int], tuple[Definition, Interpreter]] = {}
        self._latest: dict[str, int] = {}
        self._active: dict[str, _Active] = {}
        self._active_lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self.register(*sagas)

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        sagas: Iterable[type | Definition] = (),
        observer: Observer | None = None,
        resources: Iterable[object] = (),
        **overrides: Any,
    ) -> Self:
        """An engine configured by :class:`~statesaga.settings.Settings`.

        ``settings`` defaults to ``Settings.load()`` (environment, TOML); setting
        names given as ``overrides`` (``database_url=...``) win. The store is
        opened on ``database_url`` (in ``schema``), with Redis entity locks when
        ``redis_url`` is set, leases of ``lease_duration`` and ``default_deadline``.
        """
        from statesaga.settings import Settings

        settings = Settings.load(**overrides) if settings is None else settings.replace(**overrides)
        arguments = settings.engine_arguments()
        if settings.redis_url is not None:
            from statesaga.locks import redis as redis_locks

            kind = redis_locks.AsyncRedisLocks if cls._accepts_async_locks else None
            arguments["locks"] = (kind or redis_locks.RedisLocks)(settings.redis_url)
        return cls(**arguments, sagas=sagas, observer=observer, resources=resources)

    # -- registry ----------------------------------------------------------------------

    def register(self, *sagas: type | Definition) -> None:
        """Register saga classes (or definitions); several versions of one saga may coexist."""
        for saga in sagas:
            definition = _definition_of(saga)
            known = self._definitions.get(definition.key)
            if known is not None and known[0].graph_hash != definition.graph_hash:
                raise StateSagaError(
                    f"saga {definition.name!r} version {definition.version} is already "
                    "registered with a different graph; bump `version` for a changed graph",
                    saga=definition.name,
                )
            driven = _with_default_retry(definition, self.default_retry)
            self._definitions[definition.key] = (driven, Interpreter(driven))
            if definition.version >= self._latest.get(definition.name, 0):
                self._latest[definition.name] = definition.version

    @property
    def definitions(self) -> builtins.list[Definition]:
        """Every registered definition."""
        return [definition for definition, _ in self._definitions.values()]

    def _resolve(self, saga: SagaRef) -> tuple[Definition, Interpreter]:
        if not isinstance(saga, str):
            definition = _definition_of(saga)
            if definition.key not in self._definitions:
                self.register(definition)
            return self._definitions[definition.key]
        version = self._latest.get(saga)
        if version is None:
            known = ", ".join(sorted(self._latest)) or "none"
            raise SagaNotRegistered(
                f"no saga named {saga!r} is registered (registered: {known}); pass the Saga "
                "class or register it with engine.register(...)",
                saga=saga,
            )
        return self._definitions[(saga, version)]

    def _for_row(self, row: InstanceRow) -> tuple[Definition, Interpreter]:
        found = self._definitions.get((row.saga, row.saga_version))
        if found is None:
            raise SagaNotRegistered(
                f"instance {row.id} runs saga {row.saga!r} version {row.saga_version}, which "
                "this engine has not registered; register that version to drive it",
                saga=row.saga,
                instance_id=row.id,
            )
        if found[0].graph_hash != row.graph_hash:
            raise SagaNotRegistered(
                f"instance {row.id} was started on a different graph of saga {row.saga!r} "
                f"version {row.saga_version} (hash {row.graph_hash}, registered "
                f"{found[0].graph_hash}); register the original definition, and bump `version` "
                "when a graph changes",
                saga=row.saga,
                instance_id=row.id,
            )
        return found

    # -- operations as generators --------------------------------------------------------

    def _start(
        self,
        saga: SagaRef,
        saga_input: Any,
        *,
        key: str | None,
        idempotency_key: str | None,
        correlation_id: str | None,
        deadline: float | timedelta | datetime | None,
        wait: float,
    ) -> Driver:
        definition, core = self._resolve(saga)
        typed_input = structure(
            saga_input, definition.input_type, what="input", saga=definition.name
        )
        input_json = converter.unstructure(typed_input, definition.input_type)
        if idempotency_key is not None:
            existing = self.store.find(definition.name, idempotency_key=idempotency_key)
            if existing is not None:
                return self._existing(existing, input_json)
        try:
            data = definition.make_initial_context(typed_input)
        except Exception as error:
            raise InputError(
                f"initial_context of saga {definition.name!r} rejected the input: {error}",
                saga=definition.name,
            ) from error
        now = self.clock()
        instance_id = uuid.uuid4().hex
        correlation_id = correlation_id or instance_id
        give_up = now + wait
        locked = key is not None and self.locks is not None
        lease: Lease | None = None
        if locked and key:
            try:
                lease = yield from self._acquire(key, wait, definition.name)
            except EntityBusy:
                if idempotency_key is None:
                    raise
                # a racing start of the same key holds the lock: wait for its run, never busy
                found = yield from self._await_start(
                    definition.name, key, idempotency_key, max(wait, IDEMPOTENT_WAIT)
                )
                if isinstance(found, InstanceRow):
                    return self._existing(found, input_json)
                lease = found
        try:
            nxt = core.start(
                instance_id,
                typed_input,
                data,
                now=now,
                deadline=self._deadline(definition, deadline, now),
            )
            run = _Active(
                definition,
                core,
                instance_id,
                1,
                1,
                nxt.snapshot,
                typed_input,
                correlation_id,
                key,
                lease,
                created_at=now,
                updated_at=now,
            )
            row = self._new_row(run, nxt, input_json, idempotency_key, now)
            run.leased = row.lease_owner is not None
            history_rows = self._history_rows(run, nxt, now, now, version=1)
            try:
                yield from self._insert(row, history_rows, give_up if not locked else now)
            except (DuplicateStart, EntityBusy):
                # a racing start may have taken the entity key with the same idempotency key
                # (the database reports whichever unique index it checked first)
                existing = (
                    None
                    if idempotency_key is None
                    else self.store.find(definition.name, idempotency_key=idempotency_key)
                )
                if existing is None:
                    raise
                return self._existing(existing, input_json)
            log.info(
                "started %s %s",
                definition.name,
                instance_id,
                extra=_log_extra(run),
            )
            if self.observer is not None:
                self._notify(
                    self.observer.run_started,
                    saga=definition.name,
                    instance_id=instance_id,
                    correlation_id=correlation_id,
                )
            result = yield from self._hold(run, nxt)
        finally:
            if lease is not None:
                self._release_lock(lease)
        return (yield from self._after_release(result))

    def _insert(
        self, row: InstanceRow, history_rows: builtins.list[HistoryRow], give_up: float
    ) -> Generator[Request, Any, None]:
        """Insert a new instance; while its key is busy, retry until ``give_up``."""
        delay = 0.005
        while True:
            try:
                self.store.insert(row, history_rows)
                return
            except EntityBusy:
                now = self.clock()
                if now >= give_up:
                    raise
                yield Pause(min(delay, give_up - now))
                delay = min(delay * 2, 0.25)

    def _await_start(
        self, saga: str, key: str, idempotency_key: str, patience: float
    ) -> Generator[Request, Any, InstanceRow | Lease]:
        """The run a racing start with ``idempotency_key`` made, or the lock once it is free.

        Raises ``EntityBusy`` at once when the key is held by a run of another
        idempotency key, or when nothing turns up within ``patience`` seconds.
        """
        give_up = self.clock() + patience
        delay = 0.005
        while True:
            existing = self.store.find(saga, idempotency_key=idempotency_key)
            if existing is not None:
                return existing
            holder = self.store.find(saga, entity_key=key)
            if holder is not None and holder.idempotency_key != idempotency_key:
                raise EntityBusy(
                    f"{key} is busy: run {holder.id} holds it; retry later, or pass "
                    "wait=seconds to wait for it",
                    key=key,
                    instance_id=holder.id,
                )
            lease: Lease | None = yield LockOp(key)
            if lease is not None:
                return lease
            now = self.clock()
            if now >= give_up:
                raise EntityBusy(
                    f"{key} is busy: another start holds it; retry later, or pass "
                    "wait=seconds to wait for it",
                    key=key,
                )
            yield Pause(min(delay, give_up - now))
            delay = min(delay * 2, 0.1)

    def _existing(self, row: InstanceRow, input_json: Any) -> Run:
        if row.input != input_json:
            raise DuplicateStart(
                f"idempotency key {row.idempotency_key!r} was used by instance {row.id} with a "
                "different input; use a new idempotency key for a new run",
                saga=row.saga,
                instance_id=row.id,
            )
        return self._run_of(row)

    def _acquire(self, key: str, wait: float, saga: str) -> Generator[Request, Any, Lease]:
        began = self.clock()
        give_up = began + wait
        delay = 0.005
        while True:
            now = self.clock()
            lease: Lease | None = yield LockOp(key)
            if lease is not None:
                if self.observer is not None:
                    self._notify(
                        self.observer.lock_waited,
                        key=key,
                        seconds=self.clock() - began,
                        acquired=True,
                        saga=saga,
                    )
                return lease
            if now >= give_up:
                if self.observer is not None:
                    self._notify(
                        self.observer.lock_waited,
                        key=key,
                        seconds=now - began,
                        acquired=False,
                        saga=saga,
                    )
                raise EntityBusy(
                    f"{key} is busy: another run holds it; retry later, or pass wait=seconds "
                    "to wait for it",
                    key=key,
                )
            yield Pause(min(delay, max(give_up - now, 0.0)))
            delay = min(delay * 2, 0.25)

    def _claimed(
        self, instance_id: str, wait: float, listed: InstanceRow | None = None
    ) -> Generator[Request, Any, tuple[_Active, InstanceRow]]:
        """Take the entity lease and the instance's claim (bumping its epoch).

        With ``listed`` (a row as ``recover`` found it), the claim succeeds only if
        the row has not moved on since: a run another engine finished or claimed in
        the meantime is left alone (``FencedOut``).
        """
        row = listed or self._get_row(instance_id)
        definition, core = self._for_row(row)
        if listed is not None:
            wait = 0.0
        lease = None
        if self.locks is not None:
            lease = yield from self._acquire(
                row.entity_key or f"instance:{row.id}", wait, definition.name
            )
        give_up = self.clock() + (wait if lease is None else 0.0)
        delay = 0.005
        try:
            while True:
                now = self.clock()
                try:
                    claimed = self.store.claim(
                        row.id, row.version, self.owner, now + self.lease_ttl, now
                    )
                    break
                except EntityBusy:
                    if now >= give_up:
                        raise
                yield Pause(min(delay, give_up - now))
                delay = min(delay * 2, 0.25)
                row = self._get_row(instance_id)
        except BaseException:
            if lease is not None:
                self._release_lock(lease)
            raise
        run = self._active_of(claimed, definition, core)
        run.lease = lease
        return run, claimed

    def _operate(
        self,
        instance_id: str,
        outcome: Outcome | None,
        wait: float,
        listed: InstanceRow | None = None,
    ) -> Driver:
        """Claim an instance, apply ``outcome`` (or just decide), and drive it."""
        row = listed or self._get_row(instance_id)
        definition, core = self._for_row(row)
        if outcome is not None:  # reject a bad event/cancel/retry before writing anything
            core.next(self._snapshot(row, definition), outcome, self.clock())
        run, _ = yield from self._claimed(instance_id, wait, listed)
        try:
            now = self.clock()
            if outcome is None:
                nxt = self._take_inbox(run, now, resumed=True) or core.decide(
                    run.snapshot, now, resumed=True
                )
            else:
                try:
                    nxt = core.next(run.snapshot, outcome, now)
                except StateSagaError:  # the run changed between the check and the claim
                    self._release(run)
                    raise
            result = yield from self._hold(run, nxt, started=now)
        finally:
            if run.lease is not None:
                self._release_lock(run.lease)
        return (yield from self._after_release(result))

    def _release(self, run: _Active, *, busy: bool = False) -> None:
        """Give up the instance row's lease without a transition.

        The run keeps a due time whenever it is not terminal (the liveness
        invariant), so recovery finds it again; ``busy`` (its entity lock was
        held by someone else) puts that time a little later.
        """
        now = self.clock()
        due = run.core.next_due(run.snapshot, now)
        if busy and due is not None:
            due = max(due, now + BUSY_RETRY)
        write = attrs.evolve(
            self._write(run, run.snapshot, None, now),
            lease_owner=None,
            lease_expires_at=None,
            due_at=due,
        )
        self.store.transition(run.id, run.version, run.epoch, write, [])
        run.version += 1
        run.leased = False

    # -- the inbox: events and cancels ------------------------------------------------------

    def _send(
        self,
        instance_id: str,
        kind: str,
        event: str | None,
        payload: Any,
        event_id: str | None,
        wait: float,
    ) -> Driver:
        """Record an event (or cancel) in the run's inbox, then consume it if the run is free."""
        row = self._get_row(instance_id)
        definition, _ = self._for_row(row)
        if kind == "event":
            assert event is not None
            payload = self._payload_json(definition, row, event, payload)
        entry, duplicate = self.store.receive(
            InboxRow(
                instance_id=row.id,
                event_id=event_id or uuid.uuid4().hex,
                kind=kind,
                event=event,
                payload=payload,
                status=DeliveryStatus.PENDING.value,
                reason=None,
                correlation_id=row.correlation_id,
                received_at=self.clock(),
            )
        )
        run: Run | None = None
        if not duplicate:
            run = yield from self._consume(row.id, wait)
            entry = self.store.inbox_entry(row.id, entry.event_id) or entry
        if run is None:
            run = self._run_of(self._get_row(row.id))
        return Delivery(
            event_id=entry.event_id,
            event=event,
            instance_id=row.id,
            status=DeliveryStatus(entry.status),
            reason=entry.reason,
            duplicate=duplicate,
            run=run,
        )

    def _payload_json(
        self, definition: Definition, row: InstanceRow, event: str, payload: Any
    ) -> Any:
        """The event's payload, checked against its declared type and made JSON."""
        takers = [t for t in definition.transitions.values() if t.event == event]
        if not takers:
            known = sorted({t.event for t in definition.transitions.values() if t.event})
            raise EventNotAllowed(
                f"saga {definition.name!r} has no event {event!r} (it takes: "
                f"{', '.join(known) or 'no events'}); check the event's name",
                saga=definition.name,
                instance_id=row.id,
                state=row.state,
            )
        here = definition.events_from.get(row.state, {}).get(event)
        payload_type = (here or takers[0]).payload_type
        if payload_type is None:
            return None if payload is None else converter.unstructure(payload)
        typed = structure(
            payload, payload_type, what=f"payload of event {event!r}", saga=definition.name
        )
        return converter.unstructure(typed, payload_type)

    def _consume(self, instance_id: str, wait: float) -> Generator[Request, Any, Run | None]:
        """Claim the run and let it take its inbox; ``None`` if someone else holds it.

        Whoever holds the run takes the inbox before it lets the run go, and
        checks again once it has: so an event recorded while the run was busy is
        consumed by the holder, by this sender, or by a worker, never lost.
        """
        for _ in range(3):
            try:
                run, _ = yield from self._claimed(instance_id, wait)
            except EntityBusy:
                return None  # the holder (or a worker) takes it
            except FencedOut:
                continue  # the run moved between reading and claiming it: look again
            try:
                now = self.clock()
                nxt = self._take_inbox(run, now, resumed=True) or run.core.decide(
                    run.snapshot, now, resumed=True
                )
                result: Run = yield from self._hold(run, nxt, started=now)
            except FencedOut:
                # another engine claimed the run meanwhile: what this one took from the
                # inbox is persisted, and the run is theirs to drive on
                return None
            finally:
                if run.lease is not None:
                    self._release_lock(run.lease)
            if not self._has_pending(result):
                return result
        return None

    def _has_pending(self, result: Run) -> bool:
        """A run just let go while still able to take events has some in its inbox."""
        if result.status.is_terminal:
            return False  # late entries are rejected by whoever claims it next
        return bool(self.store.pending(result.id))

    def _after_release(self, result: Run) -> Generator[Request, Any, Run]:
        """After letting a run go: take the events that came while it was held."""
        if not self._has_pending(result):
            return result
        taken = yield from self._consume(result.id, 0.0)
        return result if taken is None else taken

    def _take_inbox(self, run: _Active, now: float, *, resumed: bool) -> Next | None:
        """Apply (or reject) the run's pending inbox entries, persisted in one transition.

        Returns what to do next, or ``None`` if nothing was pending (or all of it
        is early, waiting for a later state).
        """
        pending = self.store.pending(run.id)
        if not pending:
            return None
        applied = self._apply_inbox(run, Next(run.snapshot, _UNDECIDED), pending, now, resumed)
        if applied is None:
            return None
        nxt, settles = applied
        if nxt.decision is _UNDECIDED:  # nothing was accepted: decide as of now
            decided = run.core.decide(nxt.snapshot, now, resumed=resumed)
            nxt = Next(decided.snapshot, decided.decision, nxt.records + decided.records)
        done = self._persist(run, nxt, now, settle=settles)
        return Next(done.snapshot, done.decision)  # persisted: nothing left to write

    def _apply_inbox(
        self,
        run: _Active,
        nxt: Next,
        pending: builtins.list[InboxRow],
        now: float,
        resumed: bool,
    ) -> tuple[Next, builtins.list[Settle]] | None:
        """``nxt`` with the inbox entries applied (and the rejected ones recorded)."""
        core = run.core
        snapshot, decision, records = nxt.snapshot, nxt.decision, list(nxt.records)
        settles: builtins.list[Settle] = []
        for entry in pending:
            assert entry.id is not None
            fit: EventFit
            if entry.kind == "cancel":
                fit = core.cancel_fit(snapshot, resumed=resumed)
                reason = (entry.payload or {}).get("reason", "cancelled")
                outcome: Outcome = CancelRequested(reason)
                rejected = ErrorInfo("CancelRejected", fit.reason or "", retryable=False)
            else:
                assert entry.event is not None
                fit = core.event_fit(snapshot, entry.event, entry.received_at)
                if fit.verdict == "early":
                    continue  # kept until a state takes it
                payload = _payload_of(run.definition, snapshot, entry)
                outcome = EventArrived(entry.event, payload, entry.received_at)
                rejected = ErrorInfo("EventRejected", fit.reason or "", retryable=False)
            if fit.accepted:
                applied = core.next(snapshot, outcome, now)
                snapshot, decision = applied.snapshot, applied.decision
                records.extend(applied.records)
                settles.append(Settle(entry.id, DeliveryStatus.ACCEPTED.value, None, now))
                continue
            log.info(
                "%s %s of %s %s not accepted: %s",
                entry.kind,
                entry.event or "",
                run.definition.name,
                run.id,
                fit.reason,
                extra=_log_extra(run),
            )
            records.append(
                Record(
                    HistoryKind.REJECTED,
                    snapshot.state,
                    snapshot.state,
                    None,
                    0,
                    rejected,
                    entry.event,
                )
            )
            settles.append(Settle(entry.id, DeliveryStatus.REJECTED.value, fit.reason, now))
        if not settles:
            return None
        return Next(snapshot, decision, tuple(records)), settles

    def _hold(self, run: _Active, nxt: Next, *, started: float | None = None) -> Driver:
        """Drive ``run`` from ``nxt`` while the keeper renews its leases."""
        self._track(run)
        try:
            return (yield from self._drive(run, nxt, started))
        finally:
            self._untrack(run)

    def _drive(self, run: _Active, nxt: Next, started: float | None) -> Driver:
        if started is not None:
            nxt = self._persist(run, nxt, started)
        else:
            run.snapshot = nxt.snapshot
        while True:
            decision = nxt.decision
            if isinstance(decision, RunStep):
                nxt = yield from self._run_step(run, decision)
            elif isinstance(decision, RunCompensation):
                nxt = yield from self._run_compensation(run, decision)
            elif isinstance(decision, ChooseBranch):
                nxt = yield from self._choose(run, decision)
            elif isinstance(decision, Sleep):
                delay = decision.until - self.clock()
                if delay > self.max_inline_sleep:
                    break
                if delay > 0:
                    yield Pause(delay)
                # the delay has been slept: decide as of its end even if the clock (a test's
                # fake one) has not moved, so that a retry is never put off for ever
                now = max(self.clock(), decision.until)
                # a cancel sent during the backoff is taken before the next try
                taken = self._take_inbox(run, now, resumed=False)
                nxt = taken or self._persist(run, run.core.decide(run.snapshot, now), now)
            else:
                break
        if run.leased:  # claimed, but nothing was persisted that let the lease go
            self._release(run)
        return self._result(run)

    def _context(self, run: _Active, name: str, attempt: int, key: str) -> StepContext[Any, Any]:
        return StepContext(
            input=run.input,
            data=run.snapshot.data,
            instance_id=run.id,
            saga=run.definition.name,
            step=name,
            attempt=attempt,
            idempotency_key=key,
            correlation_id=run.correlation_id,
            event=run.snapshot.event,
            resources=self.resources,
        )

    def _run_step(self, run: _Active, decision: RunStep) -> Generator[Request, Any, Next]:
        t = run.definition.transitions[decision.transition]
        step = t.step
        assert step is not None
        ctx = self._context(run, t.name, decision.attempt, decision.idempotency_key)
        started = self.clock()
        run.step_deadline = None if step.timeout is None else started + step.timeout
        try:
            if step.transactional:
                done = yield from self._in_transaction(
                    run,
                    Call(step.function, ctx, step.timeout),
                    lambda response: self._step_outcome(run, t, response),
                    started,
                    undo=False,
                )
                if isinstance(done, Next):
                    return done
                outcome = done
            else:
                outcome = self._step_outcome(run, t, (yield Call(step.function, ctx, step.timeout)))
        finally:
            run.step_deadline = None
        if isinstance(outcome, StepFailed):
            log.warning(
                "step %s of %s %s failed (attempt %d): %s",
                t.name,
                run.definition.name,
                run.id,
                decision.attempt,
                outcome.error.message,
                extra=_log_extra(run, t.name),
            )
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        nxt = self._persist(run, nxt, started)
        if self.observer is not None:
            error = outcome.error if isinstance(outcome, StepFailed) else None
            self._observe(run, t.name, decision.attempt, started, error, undo=False)
        return nxt

    def _in_transaction(
        self,
        run: _Active,
        call: Call,
        judge: Callable[[Response], Outcome],
        started: float,
        *,
        undo: bool,
    ) -> Generator[Request, Any, Next | Outcome]:
        """Call a step (or undo) inside the transaction that records its transition.

        Returns the committed ``Next`` when it succeeded, or its failure (the
        transaction rolled back, the step's writes with it) for the caller to record.
        """
        ctx = call.ctx
        before = _Kept.of(run)
        for attempt in (1, 2):
            try:
                with self.store.transaction() as connection:
                    response = yield attrs.evolve(
                        call, ctx=attrs.evolve(ctx, connection=connection)
                    )
                    outcome = judge(response)
                    if isinstance(outcome, StepFailed | CompensationFailed):
                        raise _Discard(outcome)
                    nxt = run.core.next(run.snapshot, outcome, self.clock())
                    nxt = self._persist(run, nxt, started, connection=connection)
                break
            except _Discard as discard:
                return discard.outcome
            except ConnectionLost:
                # the database connection died: the transaction rolled back (the step's
                # writes with it), or it committed and only the answer was lost
                row = self.store.get(run.id)
                if row is not None and (row.version, row.epoch) == (before.version + 1, run.epoch):
                    break  # it committed
                before.restore(run)
                if attempt == 2:
                    raise
                log.warning(
                    "the database connection died under %s of %s %s; running it again on a "
                    "fresh connection",
                    ctx.step,
                    run.definition.name,
                    run.id,
                    extra=_log_extra(run, ctx.step),
                )
        if isinstance(nxt.decision, Finish):
            self._finished(run, run.updated_at)
        if self.observer is not None:
            self._observe(run, ctx.step, ctx.attempt, started, None, undo=undo)
        return nxt

    def _step_outcome(self, run: _Active, t: TransitionDef, response: Response) -> Outcome:
        assert t.step is not None
        if response.error is not None:
            return StepFailed(
                _error_info(response.error, t.step.retry.is_retryable(response.error))
            )
        data = response.value
        definition = run.definition
        if data is None:
            data = run.snapshot.data
        elif not isinstance(data, definition.context_type):
            return StepFailed(
                ErrorInfo(
                    "TypeError",
                    f"step {t.name!r} returned {type(data).__name__}; return the saga's "
                    f"context ({definition.context_type.__name__}) or None",
                    retryable=False,
                )
            )
        if definition.output is not None and definition.states[t.target].final:
            try:
                run.output = definition.output(run.input, data)
            except Exception as error:
                return StepFailed(_error_info(error, retryable=False))
        return StepSucceeded(data)

    def _run_compensation(
        self, run: _Active, decision: RunCompensation
    ) -> Generator[Request, Any, Next]:
        t = run.definition.transitions[decision.transition]
        assert t.step is not None
        assert t.step.compensation is not None
        ctx = self._context(run, f"{t.name}.undo", decision.attempt, decision.idempotency_key)
        started = self.clock()
        compensation = t.step.compensation
        if t.step.transactional:
            # the undo of a transactional step writes through the compensating
            # transition's own transaction: undone exactly once, or not at all
            done = yield from self._in_transaction(
                run,
                Call(compensation, ctx, t.step.timeout),
                lambda response: self._compensation_outcome(run, t, ctx, response),
                started,
                undo=True,
            )
            if isinstance(done, Next):
                return done
            outcome = done
        else:
            response = yield Call(compensation, ctx, t.step.timeout)
            outcome = self._compensation_outcome(run, t, ctx, response)
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        nxt = self._persist(run, nxt, started)
        if self.observer is not None:
            error = outcome.error if isinstance(outcome, CompensationFailed) else None
            self._observe(run, ctx.step, decision.attempt, started, error, undo=True)
        return nxt

    def _compensation_outcome(
        self, run: _Active, t: TransitionDef, ctx: StepContext[Any, Any], response: Response
    ) -> Outcome:
        assert t.step is not None
        attempt = ctx.attempt
        if response.error is None:
            value = response.value
            returned = value if isinstance(value, run.definition.context_type) else None
            log.info(
                "compensated %s of %s %s (attempt %d)",
                ctx.step,
                run.definition.name,
                run.id,
                attempt,
                extra=_log_extra(run, ctx.step),
            )
            return CompensationSucceeded(returned)
        retryable = t.step.compensation_retry.is_retryable(response.error)
        log.warning(
            "compensation %s of %s %s failed (attempt %d): %s",
            ctx.step,
            run.definition.name,
            run.id,
            attempt,
            response.error,
            extra=_log_extra(run, ctx.step),
        )
        return CompensationFailed(_error_info(response.error, retryable))

    def _choose(self, run: _Active, decision: ChooseBranch) -> Generator[Request, Any, Next]:
        started = self.clock()
        chosen: str | None = None
        for name in decision.transitions:
            t = run.definition.transitions[name]
            if t.guard is None:
                chosen = name
                break
            ctx = self._context(run, name, 1, f"{run.id}:{run.snapshot.seq}:{name}:guard")
            response = yield Call(t.guard, ctx, None)
            if response.error is not None:
                outcome: Outcome = StepFailed(_error_info(response.error, retryable=False))
                # a guard that raises ends the forward path like a failing step
                nxt = run.core.next(
                    attrs.evolve(run.snapshot, pending=name, attempt=1), outcome, self.clock()
                )
                return self._persist(run, nxt, started)
            if bool(response.value) != t.guard_negated:
                chosen = name
                break
        nxt = run.core.next(run.snapshot, BranchChosen(chosen), self.clock())
        return self._persist(run, nxt, started)

    # -- persistence ------------------------------------------------------------------------

    def _persist(
        self,
        run: _Active,
        nxt: Next,
        started: float,
        connection: Any = None,
        settle: Sequence[Settle] = (),
    ) -> Next:
        """Write ``nxt`` (one transaction); what to do next, which the inbox may change.

        A transition that lets the run go to wait for an event first takes the
        events already in its inbox, in the same write: an event that came while
        a step ran is consumed by the run's holder before it lets go.
        """
        if isinstance(nxt.decision, Wait) and nxt.records and not settle:
            pending = self.store.pending(run.id)
            if pending:
                applied = self._apply_inbox(run, nxt, pending, self.clock(), resumed=False)
                if applied is not None:
                    nxt, settle = applied
        if not nxt.records and not settle:
            run.snapshot = nxt.snapshot
            return nxt
        now = self.clock()
        write = self._write(run, nxt.snapshot, nxt.decision, now)
        rows = self._history_rows(run, nxt, started, now, version=run.version + 1)
        self.store.transition(
            run.id, run.version, run.epoch, write, rows, connection, settle=settle
        )
        run.version += 1
        run.snapshot = nxt.snapshot
        run.leased = write.lease_owner is not None
        run.renewed_at = run.updated_at = now
        if nxt.snapshot.status is not Status.COMPLETED:
            run.output = None
        if log.isEnabledFor(logging.DEBUG):
            for record in nxt.records:
                log.debug(
                    "%s %s %s: %s -> %s",
                    run.definition.name,
                    run.id,
                    record.kind.value,
                    record.from_state,
                    record.to_state,
                    extra=_log_extra(run, record.transition),
                )
        if connection is None and isinstance(nxt.decision, Finish):
            self._finished(run, now)  # a step's own transaction reports once it commits
        return nxt

    def _finished(self, run: _Active, now: float) -> None:
        """Log (and report) a run that just reached a terminal status."""
        snapshot = run.snapshot
        error = snapshot.error
        if snapshot.status is Status.COMPLETED:
            log.info("completed %s %s", run.definition.name, run.id, extra=_log_extra(run))
        elif snapshot.status is Status.COMPENSATED:
            log.info(
                "compensated %s %s after %s",
                run.definition.name,
                run.id,
                "an error" if error is None else f"{error.type}: {error.message}",
                extra=_log_extra(run, None if error is None else error.step),
            )
        else:
            log.error(
                "%s %s failed: %s; fix the cause, then `statesaga retry %s`",
                run.definition.name,
                run.id,
                "unknown error" if error is None else f"{error.type}: {error.message}",
                run.id,
                extra=_log_extra(run, None if error is None else error.step),
            )
        if self.observer is not None:
            self._notify(
                self.observer.run_finished,
                saga=run.definition.name,
                instance_id=run.id,
                correlation_id=run.correlation_id,
                status=snapshot.status,
                error=error,
                started=run.created_at,
                finished=now,
            )

    def _observe(
        self,
        run: _Active,
        step: str,
        attempt: int,
        started: float,
        error: ErrorInfo | None,
        *,
        undo: bool,
    ) -> None:
        assert self.observer is not None
        hook = self.observer.compensation_finished if undo else self.observer.step_finished
        self._notify(
            hook,
            saga=run.definition.name,
            instance_id=run.id,
            correlation_id=run.correlation_id,
            step=step,
            attempt=attempt,
            started=started,
            finished=run.updated_at,
            error=error,
        )

    @staticmethod
    def _notify(hook: Callable[..., None], **details: Any) -> None:
        """Call an observer hook; its failure must not fail the run it reports."""
        try:
            hook(**details)
        except Exception:
            log.exception("observer %s failed", getattr(hook, "__qualname__", hook))

    def _lease_fields(
        self, decision: Any, now: float
    ) -> tuple[str | None, float | None, float | None]:
        """(lease owner, lease expiry, due at) after a transition that leads to ``decision``.

        The lease is let go when the run waits, ends, or sleeps longer than
        ``max_inline_sleep`` (then ``due_at`` tells ``recover`` when to wake it).
        """
        release = isinstance(decision, Wait | Finish) or (
            isinstance(decision, Sleep) and decision.until - now > self.max_inline_sleep
        )
        due = decision.until if isinstance(decision, Sleep | Wait) else None
        if release:
            return None, None, due
        return self.owner, now + self.lease_ttl, due

    def _write(self, run: _Active, snapshot: Snapshot, decision: Any, now: float) -> Write:
        owner, expires, due = self._lease_fields(decision, now)
        definition = run.definition
        output = None
        if snapshot.status is Status.COMPLETED and run.output is not None:
            output = _encode(
                converter.unstructure(run.output, definition.output_type or type(run.output))
            )
        data = snapshot.data
        if data is not run.encoded_data:  # steps that keep the data need no new encoding
            run.encoded_context = _encode(converter.unstructure(data, definition.context_type))
            run.encoded_data = data
        return Write(
            state=snapshot.state,
            status=snapshot.status.value,
            context=run.encoded_context,
            machine=_encode(_machine(snapshot, definition)),
            error=None
            if snapshot.error is None
            else _encode(converter.unstructure(snapshot.error)),
            output=output,
            attempt=snapshot.attempt,
            due_at=due,
            lease_owner=owner,
            lease_expires_at=expires,
            updated_at=now,
        )

    def _new_row(
        self, run: _Active, nxt: Next, input_json: Any, idempotency_key: str | None, now: float
    ) -> InstanceRow:
        write = self._lease_fields(nxt.decision, now)
        definition = run.definition
        return InstanceRow(
            id=run.id,
            saga=definition.name,
            saga_version=definition.version,
            graph_hash=definition.graph_hash,
            entity_key=run.key,
            idempotency_key=idempotency_key,
            correlation_id=run.correlation_id,
            state=nxt.snapshot.state,
            status=nxt.snapshot.status.value,
            input=input_json,
            context=converter.unstructure(nxt.snapshot.data, definition.context_type),
            output=None,
            machine=_machine(nxt.snapshot, definition),
            error=None if nxt.snapshot.error is None else converter.unstructure(nxt.snapshot.error),
            attempt=nxt.snapshot.attempt,
            version=1,
            epoch=1,
            lease_owner=write[0],
            lease_expires_at=write[1],
            due_at=write[2],
            deadline=nxt.snapshot.deadline,
            created_at=now,
            updated_at=now,
        )

    def _history_rows(
        self, run: _Active, nxt: Next, started: float, now: float, *, version: int
    ) -> builtins.list[HistoryRow]:
        rows = []
        transitions = run.definition.transitions
        for record in nxt.records:
            step_name = None
            t = transitions.get(record.transition) if record.transition else None
            if t is not None and t.step is not None:
                undo = record.kind in (HistoryKind.COMPENSATE, HistoryKind.COMPENSATION_RETRY) or (
                    record.error is not None and (record.error.step or "").endswith(".undo")
                )
                step_name = t.step.compensation_name if undo else t.step.function_name
            rows.append(
                HistoryRow(
                    instance_id=run.id,
                    version=version,
                    kind=record.kind.value,
                    transition=record.transition,
                    step=step_name,
                    from_state=record.from_state,
                    to_state=record.to_state,
                    attempt=record.attempt,
                    event=record.event,
                    error=None if record.error is None else converter.unstructure(record.error),
                    epoch=run.epoch,
                    correlation_id=run.correlation_id,
                    started_at=started,
                    finished_at=now,
                )
            )
        return rows

    # -- reading ----------------------------------------------------------------------------

    def _get_row(self, instance_id: str) -> InstanceRow:
        row = self.store.get(instance_id)
        if row is None:
            raise InstanceNotFound(
                f"no instance with id {instance_id!r}; list instances with `statesaga list`",
                instance_id=instance_id,
            )
        return row

    def _find_id(self, instance_id: str | None, saga: SagaRef | None, key: str | None) -> str:
        if instance_id is not None:
            return instance_id
        if saga is None or key is None:
            raise InstanceNotFound("pass instance_id=..., or both saga=... and key=...")
        definition, _ = self._resolve(saga)
        row = self.store.find(definition.name, entity_key=key)
        if row is None:
            raise InstanceNotFound(
                f"saga {definition.name!r} has no open instance on {key!r}",
                saga=definition.name,
                key=key,
            )
        return row.id

    def _snapshot(self, row: InstanceRow, definition: Definition) -> Snapshot:
        machine = row.machine
        pending = machine.get("pending")
        event = machine.get("event")
        if event is not None and pending is not None:
            payload_type = definition.transitions[pending].payload_type
            if payload_type is not None:
                event = converter.structure(event, payload_type)
        return Snapshot(
            instance_id=row.id,
            state=row.state,
            status=Status(row.status),
            data=converter.structure(row.context, definition.context_type),
            pending=pending,
            attempt=row.attempt,
            wake_at=machine.get("wake_at"),
            deadline=row.deadline,
            stack=tuple(Done(t, seq) for t, seq in machine.get("stack", ())),
            pivoted=bool(machine.get("pivoted")),
            seq=int(machine.get("seq", 0)),
            error=None if row.error is None else converter.structure(row.error, ErrorInfo),
            event=event,
            pivot_unknown=bool(machine.get("unknown")),
        )

    def _active_of(self, row: InstanceRow, definition: Definition, core: Interpreter) -> _Active:
        return _Active(
            definition,
            core,
            row.id,
            row.version,
            row.epoch,
            self._snapshot(row, definition),
            converter.structure(row.input, definition.input_type),
            row.correlation_id,
            row.entity_key,
            # a completed run keeps its output when a late event is recorded against it
            output=None
            if row.output is None or definition.output_type is None
            else converter.structure(row.output, definition.output_type),
            created_at=row.created_at,
            updated_at=row.updated_at,
            renewed_at=self.clock(),
        )

    def _run_of(self, row: InstanceRow, history: builtins.list[HistoryRow] | None = None) -> Run:
        found = self._definitions.get((row.saga, row.saga_version))
        saga_input, data, output = row.input, row.context, row.output
        if found is not None:
            definition = found[0]
            saga_input = converter.structure(row.input, definition.input_type)
            data = converter.structure(row.context, definition.context_type)
            if row.output is not None and definition.output_type is not None:
                output = converter.structure(row.output, definition.output_type)
        return Run(
            id=row.id,
            saga=row.saga,
            version=row.saga_version,
            status=Status(row.status),
            state=row.state,
            key=row.entity_key,
            correlation_id=row.correlation_id,
            input=saga_input,
            data=data,
            output=output,
            error=None if row.error is None else converter.structure(row.error, ErrorInfo),
            created_at=row.created_at,
            updated_at=row.updated_at,
            history=tuple(_entry(h) for h in history or ()),
        )

    def _result(self, run: _Active) -> Run:
        """The run as this engine just persisted it (no need to read it back)."""
        snapshot = run.snapshot
        return Run(
            id=run.id,
            saga=run.definition.name,
            version=run.definition.version,
            status=snapshot.status,
            state=snapshot.state,
            key=run.key,
            correlation_id=run.correlation_id,
            input=run.input,
            data=snapshot.data,
            output=run.output if snapshot.status is Status.COMPLETED else None,
            error=snapshot.error,
            created_at=run.created_at,
            updated_at=run.updated_at,
        )

    def get(self, instance_id: str) -> Run:
        """The run with that id, with its history and its inbox."""
        row = self._get_row(instance_id)
        run = self._run_of(row, self.store.history(instance_id))
        inbox = tuple(
            InboxEntry(
                event_id=e.event_id,
                kind=e.kind,
                event=e.event,
                payload=e.payload,
                status=DeliveryStatus(e.status),
                reason=e.reason,
                received_at=e.received_at,
                settled_at=e.settled_at,
            )
            for e in self.store.inbox(instance_id)
        )
        return attrs.evolve(run, inbox=inbox)

    def history(self, instance_id: str) -> builtins.list[HistoryEntry]:
        """The run's persisted transitions, oldest first."""
        self._get_row(instance_id)
        return [_entry(h) for h in self.store.history(instance_id)]

    def list(
        self,
        *,
        saga: str | None = None,
        status: Status | str | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> builtins.list[Run]:
        """Runs matching every filter given, newest first (without their history).

        ``since`` and ``until`` (epoch seconds) bound when the runs were started.
        """
        rows = self.store.list(
            saga=saga,
            status=None if status is None else Status(status).value,
            entity_key=key,
            correlation_id=correlation_id,
            since=since,
            until=until,
            limit=limit,
        )
        return [self._run_of(row) for row in rows]

    # -- time helpers -------------------------------------------------------------------------

    def _deadline(
        self, definition: Definition, deadline: float | timedelta | datetime | None, now: float
    ) -> float | None:
        if deadline is None:
            default = definition.deadline or self.default_deadline
            return None if default is None else now + default
        if isinstance(deadline, datetime):
            return deadline.timestamp()
        seconds = deadline.total_seconds() if isinstance(deadline, timedelta) else float(deadline)
        if seconds <= 0:
            raise InputError(f"deadline={deadline!r} must be positive", saga=definition.name)
        return now + seconds

    # -- the lease keeper ------------------------------------------------------------------------

    def _track(self, run: _Active) -> None:
        run.renewed_at = self.clock()
        with self._active_lock:
            self._active[run.id] = run
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = threading.Thread(
                    target=self._keep_leases, name="statesaga-lease-keeper", daemon=True
                )
                self._keeper.start()

    def _untrack(self, run: _Active) -> None:
        with self._active_lock:
            self._active.pop(run.id, None)

    def _keep_leases(self) -> None:
        """Renew the leases of runs whose steps outlive a third of the lease.

        Every run due for renewal in a round is renewed by one statement (the
        store's ``extend_leases``), so the cost of a round does not grow with
        the runs in flight; each lease's new expiry is taken when its
        statement runs, not when the round began.
        """
        interval = self.lease_ttl / 3
        while not self._stopping.wait(interval / 2):
            now = self.clock()
            with self._active_lock:
                runs = list(self._active.values())
            due = [
                run
                for run in runs
                if now - run.renewed_at >= interval
                # an overrunning step loses its lease; recovery takes over
                and (run.step_deadline is None or now <= run.step_deadline)
            ]
            if not due:
                continue
            try:
                kept = self.store.extend_leases(
                    [(run.id, run.epoch) for run in due], self.clock() + self.lease_ttl
                )
            except Exception:  # the next transition's compare-and-set has the last word
                log.exception("renewing %d leases failed", len(due))
                continue
            for run in due:
                ok = run.id in kept
                if run.lease is not None and self.locks is not None:
                    try:
                        renewed = self._renew_lock(run.lease, self.clock())
                    except Exception:
                        log.exception(
                            "renewing the lock of %s failed", run.id, extra=_log_extra(run)
                        )
                        renewed = None
                    ok = ok and renewed is not None
                    run.lease = renewed or run.lease
                run.renewed_at = now
                if not ok and not run.lost:
                    run.lost = True
                    log.warning("lost the lease of %s", run.id, extra=_log_extra(run))

    # -- entity locks: overridden by the async engine for async locks ------------------------

    # the sync engine only ever holds synchronous ``Locks`` (checked on construction)

    def _try_acquire(self, key: str) -> Lease | None:
        locks = cast("Locks", self.locks)
        return locks.try_acquire(key, self.owner, self.lease_ttl, self.clock())

    def _renew_lock(self, lease: Lease, now: float) -> Lease | None:
        return cast("Locks", self.locks).renew(lease, self.lease_ttl, now)

    def _release_lock(self, lease: Lease) -> None:
        if self.locks is not None:
            cast("Locks", self.locks).release(lease)

    def close(self) -> None:
        """Stop the lease keeper and close the store."""
        self._stopping.set()
        self.store.close()

    # -- recovery -----------------------------------------------------------------------------

    def _claim_due(self, limit: int) -> builtins.list[InstanceRow]:
        """Claim up to ``limit`` runs that need work, of the sagas this engine drives."""
        now = self.clock()
        return self.store.claim_due(
            now, limit, self.owner, now + self.lease_ttl, sagas=list(self._definitions)
        )

    def _recover_claimed(self, row: InstanceRow) -> Driver:
        """Drive a run that ``claim_due`` claimed for this engine."""
        try:
            definition, core = self._for_row(row)
        except SagaNotRegistered:
            self.store.release_lease(row.id, row.epoch)
            raise
        run = self._active_of(row, definition, core)
        if self.locks is not None:
            lease = yield LockOp(row.entity_key or f"instance:{row.id}")
            if lease is None:
                # someone holds the entity: the run stays due, a little later
                self._release(run, busy=True)
                raise EntityBusy(f"{row.entity_key} is busy; left for later", key=row.entity_key)
            run.lease = lease
        try:
            now = self.clock()
            nxt = self._take_inbox(run, now, resumed=True) or core.decide(
                run.snapshot, now, resumed=True
            )
            result = yield from self._hold(run, nxt, started=now)
        finally:
            if run.lease is not None:
                self._release_lock(run.lease)
        return (yield from self._after_release(result))


_encode = json.JSONEncoder(separators=(",", ":")).encode

# the decision of a Next whose inbox entries are applied before anything is decided
_UNDECIDED = Sleep(float("-inf"))


def _payload_of(definition: Definition, snapshot: Snapshot, entry: InboxRow) -> Any:
    """An inbox entry's payload, structured into the type its transition from here declares."""
    assert entry.event is not None
    t = definition.events_from.get(snapshot.state, {}).get(entry.event)
    if t is None or t.payload_type is None or entry.payload is None:
        return entry.payload
    return converter.structure(entry.payload, t.payload_type)


def _with_default_retry(definition: Definition, policy: Retry | None) -> Definition:
    """``definition`` with ``policy`` for every step that declared no retry policy."""
    if policy is None:
        return definition
    transitions = {
        name: t
        if t.step is None or t.step.retry_declared
        else attrs.evolve(t, step=attrs.evolve(t.step, retry=policy))
        for name, t in definition.transitions.items()
    }
    automatic = {
        state: tuple(transitions[t.name] for t in edges)
        for state, edges in definition.automatic_from.items()
    }
    events = {
        state: {event: transitions[t.name] for event, t in edges.items()}
        for state, edges in definition.events_from.items()
    }
    timeouts = {state: transitions[t.name] for state, t in definition.timeout_from.items()}
    return attrs.evolve(
        definition,
        transitions=transitions,
        automatic_from=automatic,
        events_from=events,
        timeout_from=timeouts,
    )


def _definition_of(saga: type | Definition) -> Definition:
    if isinstance(saga, Definition):
        return saga
    definition = getattr(saga, "definition", None)
    if not isinstance(definition, Definition):
        raise SagaNotRegistered(f"{saga!r} is not a Saga class or a Definition")
    return definition


def _machine(snapshot: Snapshot, definition: Definition) -> dict[str, Any]:
    event = snapshot.event
    if event is not None and snapshot.pending is not None:
        payload_type = definition.transitions[snapshot.pending].payload_type
        event = converter.unstructure(event, payload_type) if payload_type else event
    return {
        "pending": snapshot.pending,
        "wake_at": snapshot.wake_at,
        "stack": [[done.transition, done.seq] for done in snapshot.stack],
        "pivoted": snapshot.pivoted,
        "seq": snapshot.seq,
        "event": event,
        "unknown": snapshot.pivot_unknown,
    }


def _error_info(error: BaseException, retryable: bool) -> ErrorInfo:
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if isinstance(error, StepTimeout):
        name = "StepTimeout"
    return ErrorInfo(name, str(error) or kind.__name__, retryable)


def _entry(row: HistoryRow) -> HistoryEntry:
    return HistoryEntry(
        kind=HistoryKind(row.kind),
        from_state=row.from_state,
        to_state=row.to_state,
        transition=row.transition,
        step=row.step,
        attempt=row.attempt,
        event=row.event,
        error=None if row.error is None else converter.structure(row.error, ErrorInfo),
        version=row.version,
        epoch=row.epoch,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _log_extra(run: _Active, step: str | None = None) -> dict[str, Any]:
    return {
        "instance_id": run.id,
        "saga": run.definition.name,
        "state": run.snapshot.state,
        "step": step,
        "correlation_id": run.correlation_id,
    }
