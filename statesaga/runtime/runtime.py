"""``Runtime``: the rooms an engine holds, put together, and the operations over them.

An engine builds one ``Runtime`` and pumps the generators its operations
return (``start``, ``operate``, ``inbox.send``, ``recovery.recover``). The
runtime holds no I/O of its own beyond the store and lock calls its rooms
make: calling steps and sleeping is the engine's part.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import attrs

from statesaga.context import Resources
from statesaga.core import Interpreter, Next, RunStep
from statesaga.definition import Definition
from statesaga.errors import DuplicateStart, EntityBusy, InputError, StateSagaError
from statesaga.locks.base import AsyncLocks, Lease, Locks
from statesaga.retry import Retry
from statesaga.run import Run
from statesaga.runtime.children import Children
from statesaga.runtime.claims import IDEMPOTENT_WAIT, Claims
from statesaga.runtime.codec import Leasing, history_rows, new_row, snapshot_of
from statesaga.runtime.drive import Drive
from statesaga.runtime.forks import Forks
from statesaga.runtime.held import HeldRun
from statesaga.runtime.inbox import Inbox
from statesaga.runtime.leases import DEFAULT_MAX_IN_FLIGHT, LeaseKeeper
from statesaga.runtime.limits import DEFAULT_MAX_PAYLOAD_BYTES, PayloadLimit
from statesaga.runtime.locking import AsyncLockPort, LockPort, SyncLockPort
from statesaga.runtime.migration import Migrations
from statesaga.runtime.reads import Reads, get_row
from statesaga.runtime.recovery import Recovery
from statesaga.runtime.registry import Registry
from statesaga.runtime.reporting import Reporter
from statesaga.runtime.requests import Driver, Request, SagaRef
from statesaga.runtime.transitions import Transitions
from statesaga.serde import converter, structure
from statesaga.store.base import InstanceRow, Store

if TYPE_CHECKING:
    from statesaga.core import ChildOutcome, Outcome
    from statesaga.observability import Observer
    from statesaga.settings import Settings

__all__ = ["Runtime", "redis_locks", "settings_arguments"]


class Runtime:
    """What an engine holds: its store, locks, registry, and the rooms that drive runs.

    Takes the engine's arguments (see ``Engine``); ``asynchronous`` picks the
    lock port of ``AsyncEngine``, which also accepts asynchronous locks.
    """

    def __init__(
        self,
        database: str | Store | None = None,
        *,
        asynchronous: bool = False,
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
        max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES,
        max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if database is None:
            # nothing said: the settings decide (environment, statesaga.toml, pyproject),
            # so a deployment moves to PostgreSQL and Redis without a code change
            from statesaga.settings import Settings

            settings = Settings.load()
            database = settings.store()
            if locks is None and settings.redis_url is not None:
                locks = redis_locks(settings.redis_url, asynchronous=asynchronous)
            if default_deadline is None:
                default_deadline = settings.default_deadline
            if default_retry is None:
                default_retry = settings.retry
        if isinstance(database, str):
            from statesaga.store.sql import SqlStore

            database = SqlStore(database)
        self.store: Store = database
        is_async = locks is not None and inspect.iscoroutinefunction(locks.try_acquire)
        if is_async and not asynchronous:
            raise StateSagaError(
                f"{type(locks).__name__} is asynchronous: use it with AsyncEngine, or "
                "use the synchronous variant (e.g. RedisLocks) with Engine"
            )
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl={lease_ttl!r} must be positive")
        # None: the store's own lease on the instance row (claim with expiry, epoch bump)
        # is the only lock, and the unique open-instance index makes a busy key fail fast
        self.locks = locks
        self.lease_ttl = lease_ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.max_inline_sleep = max_inline_sleep
        self.default_deadline = default_deadline
        self.resources = Resources(resources)
        if max_payload_bytes is not None and max_payload_bytes < 1:
            raise ValueError(
                f"max_payload_bytes={max_payload_bytes!r} must be positive (None: no limit)"
            )
        self.limit = PayloadLimit(max_payload_bytes)
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight={max_in_flight!r} must be positive (None: no bound)")
        self.lock_port: LockPort
        if asynchronous:
            self.lock_port = AsyncLockPort(locks, self.owner, lease_ttl, clock)
        else:  # synchronous locks only (checked above)
            self.lock_port = SyncLockPort(cast("Locks | None", locks), self.owner, lease_ttl, clock)
        self.registry = Registry(default_retry)
        self.reporter = Reporter(observer)
        self.reads = Reads(self.store, self.registry)
        leasing = Leasing(self.owner, lease_ttl, max_inline_sleep)
        self.transitions = Transitions(self.store, leasing, clock, self.reporter)
        self.keeper = LeaseKeeper(self.store, self.lock_port, lease_ttl, clock, max_in_flight)
        self.drive = Drive(
            self.transitions,
            self.keeper,
            self.reporter,
            self.resources,
            clock,
            max_inline_sleep,
            self.limit,
        )
        self.claims = Claims(
            self.store, self.registry, self.reads, self.lock_port, leasing, clock, self.reporter
        )
        self.inbox = Inbox(self.claims, self.drive, clock, self.limit)
        self.recovery = Recovery(self.claims, self.drive, self.inbox, clock)
        self.forks = Forks(self.claims, self.drive, self.inbox, clock, default_deadline)
        self.migrations = Migrations(self.store, self.registry, leasing, clock)
        self.children = Children(
            self.drive, self.inbox, self.reads, self.resources, clock, self.start, self.operate
        )
        self.drive.children = self.children
        self.registry.register(*sagas)

    @property
    def default_retry(self) -> Retry | None:
        """The retry policy of every step that declares none."""
        return self.registry.default_retry

    @property
    def observer(self) -> Observer | None:
        """The observer told of runs, steps and lock waits (``None``: nobody)."""
        return self.reporter.observer

    def close(self) -> None:
        """Stop the lease keeper and close the store."""
        self.keeper.stop()
        self.store.close()

    # -- operations, as generators an engine pumps ------------------------------------------

    def start(
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
        """Start a run and drive it until it waits or ends (see ``Engine.start``)."""
        definition, core = self.registry.resolve(saga)
        typed_input = structure(
            saga_input, definition.input_type, what="input", saga=definition.name
        )
        input_json = converter.unstructure(typed_input, definition.input_type)
        self.limit.encoded(input_json, "input", saga=definition.name)
        claims = self.claims
        if idempotency_key is not None:
            existing = self.store.find(definition.name, idempotency_key=idempotency_key)
            if existing is not None:
                return claims.existing(existing, input_json)
        try:
            data = definition.make_initial_context(typed_input)
        except Exception as error:
            raise InputError(
                f"initial_context of saga {definition.name!r} rejected the input: {error}",
                saga=definition.name,
            ) from error
        self.limit.encoded(
            converter.unstructure(data, definition.context_type),
            "initial context",
            saga=definition.name,
        )
        # a slot for the run before anything is written: refused when the engine is full
        self.keeper.admit("start", saga=definition.name)
        try:
            result = yield from self._start(
                definition,
                core,
                typed_input,
                input_json,
                data,
                key=key,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                deadline=deadline,
                wait=wait,
            )
        finally:
            self.keeper.release()
        if isinstance(result, _Existing):
            return result.run
        return (yield from self.inbox.after_release(result))

    def _start(
        self,
        definition: Definition,
        core: Interpreter,
        typed_input: Any,
        input_json: Any,
        data: Any,
        *,
        key: str | None,
        idempotency_key: str | None,
        correlation_id: str | None,
        deadline: float | timedelta | datetime | None,
        wait: float,
    ) -> Generator[Request, Any, Run | _Existing]:
        """Insert the run (under its entity lock, if any) and drive it; or the racing start's."""
        claims = self.claims
        now = self.clock()
        instance_id = uuid.uuid4().hex
        correlation_id = correlation_id or instance_id
        give_up = now + wait
        locked = key is not None and self.locks is not None
        lease: Lease | None = None
        if locked and key:
            try:
                lease = yield from claims.acquire(key, wait, definition.name)
            except EntityBusy:
                if idempotency_key is None:
                    raise
                # a racing start of the same key holds the lock: wait for its run, never busy
                found = yield from claims.await_start(
                    definition.name, key, idempotency_key, max(wait, IDEMPOTENT_WAIT)
                )
                if isinstance(found, InstanceRow):
                    return _Existing(claims.existing(found, input_json))
                lease = found
        try:
            nxt = core.start(
                instance_id,
                typed_input,
                data,
                now=now,
                deadline=self._deadline(definition, deadline, now, typed_input),
            )
            run = HeldRun(
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
                renewed_at=now,  # the row's lease runs from ``now``
                idempotency_key=idempotency_key,
            )
            if self.reporter.observer is not None:
                # the start's span: stored with the run, the parent of its later drives
                run.trace_context = self.reporter.trace(run, "start")
            try:
                row = new_row(run, nxt, input_json, idempotency_key, now, claims.leasing)
                run.leased = row.lease_owner is not None
                rows = history_rows(run, nxt, now, now, version=1)
                if self._joins_first_step(definition, nxt, key, locked, idempotency_key, wait):
                    # written in the first step's transaction, with its transition: one
                    # commit fewer, and a refused start (EntityBusy) rolls that step back
                    run.unsaved = (row, rows)
                else:
                    try:
                        yield from claims.insert(row, rows, give_up if not locked else now)
                    except (DuplicateStart, EntityBusy):
                        # a racing start may have taken the entity key with the same
                        # idempotency key (the database reports whichever unique index it
                        # checked first)
                        existing = (
                            None
                            if idempotency_key is None
                            else self.store.find(definition.name, idempotency_key=idempotency_key)
                        )
                        if existing is None:
                            raise
                        self.reporter.end_trace(run, None)
                        return _Existing(claims.existing(existing, input_json))
                    run.stored = (row.status, row.due_at, row.lease_owner)
                    self.reporter.started(run)
                result: Run = yield from self.drive.hold(run, nxt, operation="start")
                return result
            except BaseException as error:
                self.reporter.end_trace(run, error)  # unless the drive ended it
                raise
        finally:
            if lease is not None:
                self.lock_port.release(lease)

    def _joins_first_step(
        self,
        definition: Definition,
        nxt: Next,
        key: str | None,
        locked: bool,
        idempotency_key: str | None,
        wait: float,
    ) -> bool:
        """Whether a start is inserted in its first step's transaction, not before it.

        So it is when that step is transactional (nothing of it outlives a
        rollback), unless the start has an idempotency key (a racing duplicate is
        then looked up) or waits for its entity key without a lock (its insert is
        retried until then).
        """
        if idempotency_key is not None:
            return False
        if key is not None and not locked and wait > 0:
            return False
        decision = nxt.decision
        if not isinstance(decision, RunStep):
            return False
        step = definition.transitions[decision.transition].step
        return step is not None and step.transactional

    def operate(
        self,
        instance_id: str,
        outcome: Outcome | ChildOutcome | None,
        wait: float,
        operation: str = "resume",
    ) -> Driver:
        """Claim an instance, apply ``outcome`` (or just decide), and drive it.

        ``operation`` names the call for the run's trace (``resume``, ``retry``).
        """
        row = get_row(self.store, instance_id)
        definition, core = self.registry.for_row(row)
        if outcome is not None:  # reject a bad event/cancel/retry before writing anything
            core.next(snapshot_of(row, definition), outcome, self.clock())
        self.keeper.admit("resume" if outcome is None else "retry", instance_id=instance_id)
        try:
            run = yield from self.claims.claim(instance_id, wait)
        except BaseException:
            self.keeper.release()
            raise
        try:
            now = self.clock()
            if outcome is None:
                nxt = self.transitions.next_step(run, now)
            else:
                try:
                    nxt = core.next(run.snapshot, outcome, now)
                except StateSagaError:  # the run changed between the check and the claim
                    self.transitions.release(run)
                    raise
            result = yield from self.drive.hold(run, nxt, started=now, operation=operation)
        finally:
            self.keeper.release()
            if run.lease is not None:
                self.lock_port.release(run.lease)
        return (yield from self.inbox.after_release(result))

    def _deadline(
        self,
        definition: Definition,
        deadline: float | timedelta | datetime | None,
        now: float,
        saga_input: Any = None,
    ) -> float | None:
        """The run's deadline: ``start``'s argument, else the saga's (fixed, or computed
        from the input by its ``deadline(input)``), else the engine's default."""
        if deadline is None and definition.deadline_of is not None:
            try:
                deadline = definition.deadline_of(saga_input)
            except Exception as error:
                raise InputError(
                    f"deadline(input) of saga {definition.name!r} rejected the input: {error}",
                    saga=definition.name,
                ) from error
            if isinstance(deadline, bool) or (
                deadline is not None
                and not isinstance(deadline, int | float | timedelta | datetime)
            ):
                raise InputError(
                    f"deadline(input) of saga {definition.name!r} returned {deadline!r}; "
                    "return seconds, a timedelta, a datetime or None",
                    saga=definition.name,
                )
        if deadline is None:
            default = definition.deadline or self.default_deadline
            return None if default is None else now + default
        if isinstance(deadline, datetime):
            return deadline.timestamp()
        seconds = deadline.total_seconds() if isinstance(deadline, timedelta) else float(deadline)
        if seconds <= 0:
            raise InputError(f"deadline={deadline!r} must be positive", saga=definition.name)
        return now + seconds


def redis_locks(url: str, *, asynchronous: bool) -> Locks | AsyncLocks:
    """Redis entity locks on ``url``: ``AsyncRedisLocks`` for the async engine."""
    from statesaga.locks import redis as redis_locks

    kind = redis_locks.AsyncRedisLocks if asynchronous else redis_locks.RedisLocks
    return kind(url)


def settings_arguments(settings: Settings, *, asynchronous: bool) -> dict[str, Any]:
    """An engine's arguments from settings: store, Redis locks when set, lease, deadline."""
    arguments = settings.engine_arguments()
    if settings.redis_url is not None:
        arguments["locks"] = redis_locks(settings.redis_url, asynchronous=asynchronous)
    return arguments


@attrs.frozen
class _Existing:
    """The run an idempotent start found (a racing start's): returned as it is."""

    run: Run
