"""``Engine``: the synchronous runtime.

>>> import attrs
>>> from statesaga import Engine, Saga, State
>>> @attrs.define
... class Greeting:
...     name: str
>>> @attrs.define
... class Said:
...     text: str = ""
>>> def greet(ctx):
...     return Said(f"hello {ctx.input.name}")
>>> class Greet(Saga[Greeting, Said]):
...     name = "greet"
...     new = State(initial=True)
...     done = State(final=True)
...     say = new.to(done).run(greet, read_only=True)
>>> with Engine("sqlite://") as engine:
...     run = engine.start(Greet, {"name": "shop"})
...     (run.status, run.data.text, [h.kind.value for h in engine.get(run.id).history])
(<Status.COMPLETED: 'completed'>, 'hello shop', ['start', 'forward'])
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from statesaga._pump import pump
from statesaga._typed_reads import EngineReads
from statesaga.core import RetryRequested, Status, resolve_request
from statesaga.delivery import Delivery
from statesaga.dsl import Event, event_name
from statesaga.errors import (
    ConcurrencyError,
    SagaNotRegistered,
)
from statesaga.run import Run
from statesaga.runtime import (
    RECOVERY_BATCH,
    Driver,
    SagaRef,
    log,
)

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from statesaga.definition import Definition
    from statesaga.dsl import Saga
    from statesaga.migration import MigrationReport

    I = TypeVar("I")  # noqa: E741 - the saga's input type, as in Saga[I, D, O]
    D = TypeVar("D")
    O = TypeVar("O")  # noqa: E741
    P = TypeVar("P")

__all__ = ["Engine", "pump"]


class Engine(EngineReads):
    """Runs sagas: persists every transition, locks per entity, retries, compensates.

    Args:
        database: a SQLAlchemy URL (SQLite files are migrated on open) or a
            ``Store``. Left out, the settings decide (``STATESAGA_DATABASE_URL``,
            ``statesaga.toml``, ``[tool.statesaga]``; default ``sqlite:///statesaga.db``),
            with Redis entity locks when ``STATESAGA_REDIS_URL`` is set.
        sagas: saga classes to register now (``start`` also registers what it is given).
        locks: entity leases; default: SQL leases in the store's database.
        lease_ttl: seconds a lease lasts; renewed while a step runs longer.
        owner: this engine's name on leases (default ``host:pid:random``).
        clock: returns the time in epoch seconds (inject a fake one in tests).
        max_inline_sleep: retry delays up to this many seconds are slept in
            place; longer ones release the run for ``recover`` (or a worker).
        default_deadline: seconds a run may take before it compensates, for
            sagas that declare no ``deadline``.
        default_retry: the ``Retry`` of every step that declares none.
        observer: told of runs, steps, compensations and lock waits
            (e.g. ``OpenTelemetryObserver``).
        resources: objects steps look up with ``ctx.resource(Kind)``.
        max_payload_bytes: the largest JSON a run's input, context, output or
            an event payload may take (2 MiB by default; ``None``: no limit);
            over it, ``start``/``send`` raise ``PayloadTooLarge`` before writing
            and a step fails without retrying.
        max_in_flight: the most runs this engine holds at once (100,000 by
            default; ``None``: no bound). At the bound, or while its last round
            of lease renewals was slow, ``start``/``resume``/``retry`` raise
            ``EngineOverloaded`` before writing, a worker claims fewer runs and
            a sent event waits in the inbox: the leases of the runs in flight
            keep being renewed in time.

    Sync steps run in the calling thread; ``async`` steps run to completion on
    a fresh event loop. A step's ``timeout`` cancels an async step; a sync step
    with a timeout runs on another thread (the process keeps a few and reuses
    them; one more starts when all are busy), which the engine stops waiting
    for when the timeout passes (the attempt fails with ``StepTimeout``). A
    transactional step stays in the calling thread, which owns its connection:
    if it overruns, its result is discarded and its writes rolled back, and its
    lease is no longer renewed, so another engine may recover the run; if this
    engine then writes late, the epoch check rejects it.
    """

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _pump(self, driver: Driver) -> Any:
        return pump(self.runtime, driver)

    @overload
    def start(
        self,
        saga: type[Saga[I, D, O]],
        input: I | Mapping[str, Any],
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[I, D, O]: ...

    @overload
    def start(
        self,
        saga: Definition | str,
        input: Any,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[Any, Any, Any]: ...

    def start(
        self,
        saga: SagaRef,
        input: Any,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        deadline: float | timedelta | datetime | None = None,
        wait: float = 0.0,
    ) -> Run[Any, Any, Any]:
        """Start a run and drive it until it waits for an event or ends.

        Given the Saga class, the result is typed: ``engine.start(CompleteCart, ...)``
        is a ``Run[CompleteCartInput, CheckoutData, ...]`` and mypy checks the input.

        Args:
            saga: the Saga class (registered on first use), its definition, or
                the name of a registered saga (its newest version).
            input: an instance of the saga's input type, or a mapping structured
                into one strictly, without coercion (a value of the wrong type
                raises ``InputError`` naming its field; nothing is written).
            key: the entity key (``cart:complete:42``): at most one open run per
                saga and key; a second start raises ``EntityBusy``.
            idempotency_key: a start with a key already used returns that run.
            correlation_id: carried on every record and log line (default: the run id).
            deadline: seconds, ``timedelta`` or a ``datetime``; when it passes before
                the pivot, the run compensates (default: the saga's ``deadline``).
            wait: seconds to wait for a busy key before raising ``EntityBusy``.
        """
        return self._pump(  # type: ignore[no-any-return]
            self.runtime.start(
                saga,
                input,
                key=key,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                deadline=deadline,
                wait=wait,
            )
        )

    @overload
    def send(
        self,
        event: Event[P],
        payload: P | Mapping[str, Any] | None = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery: ...

    @overload
    def send(
        self,
        event: str,
        payload: Any = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery: ...

    def send(
        self,
        event: str | Event[Any],
        payload: Any = None,
        *,
        instance_id: str | None = None,
        saga: SagaRef | None = None,
        key: str | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery:
        """Send ``event`` (with its payload) to a run: recorded first, then consumed.

        The event is written to the run's durable inbox in one short
        transaction, deduplicated by ``event_id`` (pass the webhook's or
        message's id; a second send with the same id returns the first one's
        delivery with ``duplicate=True``). If the run is free, this call then
        consumes it and drives the run on; if the run is busy (its lock held,
        a step running) the event stays ``pending`` and whoever holds the run,
        or a worker, takes it: a race is never an error to the sender.

        An event is judged by when it was received. One the run waits for is
        accepted if it came before the wait's timeout and the deadline; one
        that a state the run can still reach takes is kept until then (unless
        the saga sets ``refuse_early_events``); otherwise it is ``rejected``,
        recorded in the inbox and the history with the reason.

        ``event`` is the event's name, or the ``Event[Payload]`` declared on the
        saga class (then mypy checks the payload's type).

        Address the run by ``instance_id``, or by ``saga`` and entity ``key``.
        An event the saga does not declare raises ``EventNotAllowed``; a payload
        that does not fit its declared type raises ``InputError``; an unknown run
        raises ``InstanceNotFound``; none of them writes anything.

        Args:
            wait: seconds to wait for a busy run before leaving the event pending.
        """
        target = self.runtime.reads.find_id(instance_id, saga, key)
        return self._pump(  # type: ignore[no-any-return]
            self.runtime.inbox.send(target, "event", event_name(event), payload, event_id, wait)
        )

    def cancel(
        self,
        instance_id: str,
        *,
        reason: str = "cancelled",
        details: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        wait: float = 0.0,
    ) -> Delivery:
        """Ask a run to stop and compensate what it did, in reverse.

        Recorded in the run's inbox like an event (deduplicated by ``event_id``)
        and applied as soon as the run can take it: at once if it is free,
        otherwise by its holder before its next retry or wait, or by a worker.
        A run that has ended, is compensating, or whose pivot took effect (or
        may have) cannot be cancelled: the delivery is ``rejected`` with the
        reason.

        The run's error is then of kind ``ErrorKind.CANCELLED``, with ``reason``
        as its message and ``details`` (JSON values, see :mod:`statesaga.failures`)
        as its details: what code reads to tell one cancel from another.
        """
        return self._pump(  # type: ignore[no-any-return]
            self.runtime.inbox.cancel(instance_id, reason, details, event_id, wait)
        )

    def retry(self, instance_id: str, *, wait: float = 0.0) -> Run:
        """Try a ``failed`` run again: its compensation, or (past the pivot) its step."""
        return self._pump(self.runtime.operate(instance_id, RetryRequested(), wait, "retry"))  # type: ignore[no-any-return]

    def resolve(
        self,
        instance_id: str,
        *,
        outcome: Status | str,
        note: str,
        by: str | None = None,
        wait: float = 0.0,
    ) -> Run:
        """End a ``failed`` run as ``compensated`` or ``completed`` after a repair by hand.

        One transition under the entity lock and the version/epoch check; nothing
        runs or is compensated. The run stays in its state; a ``resolved`` history
        entry keeps ``note`` and ``by``; its entity key is free again.

        Example::

            run = engine.resolve(run_id, outcome="compensated",
                                 note="refunded payment pi_42 by hand", by="alice")

        Raises:
            ResolveNotAllowed: the run is not ``failed``, ``outcome`` is not
                compensated or completed, or ``note`` is empty; nothing is written.
        """
        request = resolve_request(outcome, note, by)
        return self._pump(self.runtime.operate(instance_id, request, wait))  # type: ignore[no-any-return]

    def fork(
        self,
        instance_id: str,
        *,
        from_step: str,
        note: str | None = None,
        by: str | None = None,
        wait: float = 0.0,
    ) -> Run:
        """Restart a run from one of its steps as a new run; drive it until it waits or ends.

        Same saga version, input and correlation id; it starts in ``from_step``'s
        source state with the original's latest context (the history keeps no
        context per step), and compensates only the steps it runs. Both histories
        link the runs (``forked_from``, ``forked_to``). See docs/operations.md.

        Example::

            fork = engine.fork(run_id, from_step="authorize", note="card fixed")

        Raises:
            ForkNotAllowed: the original still holds its entity key (it is open), it
                never took ``from_step``, a pivot took effect at or after that step,
                or a step before it was compensated; nothing is written.
            EntityBusy: another run now holds the entity key.
        """
        return self._pump(  # type: ignore[no-any-return]
            self.runtime.forks.fork(instance_id, from_step, note=note, by=by, wait=wait)
        )

    def resume(self, instance_id: str, *, wait: float = 0.0) -> Run:
        """Claim a run and drive it from its last persisted transition."""
        return self._pump(self.runtime.operate(instance_id, None, wait))  # type: ignore[no-any-return]

    def migrate(
        self,
        saga: SagaRef,
        *,
        from_version: int,
        to_version: int | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> MigrationReport:
        """Move the waiting and due runs of an older version onto a newer one.

        The newer version declares how (``migrates_from = Migration(...)``) and
        must be registered; the older one need not be. Each run moves in its own
        transaction (claimed, its epoch bumped) with a ``migrated`` history
        record; a run held by a live lease is skipped, one whose context the
        migration refuses is left as it was, and both are in the report.

        Args:
            saga: the newer version's class, or the saga's name.
            from_version: the version whose runs move.
            to_version: with a name, the version they move to (default: the newest
                registered).
            dry_run: report what would move, writing nothing (the context
                function still runs, to find the runs it refuses).
            limit: move at most this many runs (oldest first).

        Raises:
            SagaNotRegistered: the newer version is not registered.
            InvalidOperation: it declares no migration from ``from_version``.
        """
        return self.runtime.migrations.migrate(
            saga, from_version=from_version, to_version=to_version, dry_run=dry_run, limit=limit
        )

    def recover(self, *, limit: int = 1000) -> builtins.list[Run]:
        """Resume every run that needs it: crashed holders, due retries, timeouts, deadlines.

        Safe to call from several processes at once: each run is claimed by
        exactly one of them (the others skip it). Runs of sagas this engine
        has not registered are logged and left alone.
        """
        recovery = self.runtime.recovery
        results: builtins.list[Run] = []
        seen: set[str] = set()
        while len(results) < limit:
            batch = recovery.claim_due(min(RECOVERY_BATCH, limit - len(results)))
            # a run driven once in this call and due again at once (it waits for an event
            # that is not yet its turn) is left for the next call, so this one ends
            again = [row for row in batch if row.id in seen]
            recovery.let_go(again)
            batch = [row for row in batch if row.id not in seen]
            if not batch:
                break
            for row in batch:
                seen.add(row.id)
                try:
                    results.append(self._pump(recovery.recover(row)))
                except ConcurrencyError:
                    continue  # another engine took it over meanwhile
                except SagaNotRegistered as error:
                    log.warning("not recovering %s: %s", row.id, error)
        return results
