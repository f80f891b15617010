"""Taking hold of runs: inserting a new one, claiming a stored one, and entity locks.

Every wait here (a busy key, a claim another engine holds, a racing start
with the same idempotency key) sleeps by one ``Backoff`` and gives up with
``EntityBusy`` when its time is up.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from statesaga.errors import DuplicateStart, EntityBusy
from statesaga.locks.base import Lease
from statesaga.run import Run
from statesaga.runtime.codec import Leasing, held_of
from statesaga.runtime.held import HeldRun
from statesaga.runtime.locking import LockPort
from statesaga.runtime.reads import Reads, get_row
from statesaga.runtime.registry import Registry
from statesaga.runtime.reporting import Reporter
from statesaga.runtime.requests import Backoff, LockOp, Pause, Request
from statesaga.store.base import HistoryRow, InstanceRow, Store

__all__ = ["IDEMPOTENT_WAIT", "Claims"]

#: seconds a start with an idempotency key waits for a racing start of the same key
IDEMPOTENT_WAIT = 2.0


class Claims:
    """Starts, claims and entity locks, with one way of waiting for what is busy."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        reads: Reads,
        locks: LockPort,
        leasing: Leasing,
        clock: Callable[[], float],
        reporter: Reporter,
    ) -> None:
        self.store = store
        self.registry = registry
        self.reads = reads
        self.locks = locks
        self.leasing = leasing
        self.clock = clock
        self.reporter = reporter

    def acquire(self, key: str, wait: float, saga: str) -> Generator[Request, Any, Lease]:
        """The entity lock on ``key``, waiting up to ``wait`` seconds for it."""
        began = self.clock()
        backoff = Backoff(give_up=began + wait)
        while True:
            now = self.clock()
            lease: Lease | None = yield LockOp(key)
            if lease is not None:
                self.reporter.lock_waited(key, self.clock() - began, acquired=True, saga=saga)
                return lease
            pause = backoff.next(now)
            if pause is None:
                self.reporter.lock_waited(key, now - began, acquired=False, saga=saga)
                raise EntityBusy(
                    f"{key} is busy: another run holds it; retry later, or pass wait=seconds "
                    "to wait for it",
                    key=key,
                )
            yield Pause(pause)

    def insert(
        self, row: InstanceRow, history_rows: list[HistoryRow], give_up: float
    ) -> Generator[Request, Any, None]:
        """Insert a new instance; while its key is busy, retry until ``give_up``."""
        backoff = Backoff(give_up=give_up)
        while True:
            try:
                self.store.insert(row, history_rows)
                return
            except EntityBusy:
                pause = backoff.next(self.clock())
                if pause is None:
                    raise
                yield Pause(pause)

    def await_start(
        self, saga: str, key: str, idempotency_key: str, patience: float
    ) -> Generator[Request, Any, InstanceRow | Lease]:
        """The run a racing start with ``idempotency_key`` made, or the lock once it is free.

        Raises ``EntityBusy`` at once when the key is held by a run of another
        idempotency key, or when nothing turns up within ``patience`` seconds.
        """
        backoff = Backoff(give_up=self.clock() + patience, cap=0.1)
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
            pause = backoff.next(self.clock())
            if pause is None:
                raise EntityBusy(
                    f"{key} is busy: another start holds it; retry later, or pass "
                    "wait=seconds to wait for it",
                    key=key,
                )
            yield Pause(pause)

    def existing(self, row: InstanceRow, input_json: Any) -> Run:
        """The run an idempotency key already started, if it was started with this input."""
        if row.input != input_json:
            raise DuplicateStart(
                f"idempotency key {row.idempotency_key!r} was used by instance {row.id} with a "
                "different input; use a new idempotency key for a new run",
                idempotency_key=row.idempotency_key,
                saga=row.saga,
                instance_id=row.id,
            )
        return self.reads.run_of(row)

    def claim(
        self, instance_id: str, wait: float, listed: InstanceRow | None = None
    ) -> Generator[Request, Any, HeldRun]:
        """Take the entity lease and the instance's claim (bumping its epoch).

        With ``listed`` (a row as ``recover`` found it), the claim succeeds only if
        the row has not moved on since: a run another engine finished or claimed in
        the meantime is left alone (``FencedOut``).
        """
        row = listed or get_row(self.store, instance_id)
        definition, core = self.registry.for_row(row)
        if listed is not None:
            wait = 0.0
        lease = None
        if self.locks.locks is not None:
            lease = yield from self.acquire(
                row.entity_key or f"instance:{row.id}", wait, definition.name
            )
        backoff = Backoff(give_up=self.clock() + (wait if lease is None else 0.0))
        ttl, owner = self.leasing.lease_ttl, self.leasing.owner
        try:
            while True:
                now = self.clock()
                try:
                    claimed = self.store.claim(row.id, row.version, owner, now + ttl, now)
                    break
                except EntityBusy:
                    pause = backoff.next(now)
                    if pause is None:
                        raise
                yield Pause(pause)
                row = get_row(self.store, instance_id)
        except BaseException:
            if lease is not None:
                self.locks.release(lease)
            raise
        run = held_of(claimed, definition, core, self.clock())
        run.lease = lease
        return run
