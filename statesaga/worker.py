"""``Worker``: a long-running loop that keeps every run moving.

A worker claims runs that need work (a crashed holder's, a retry that is
due, a wait that timed out, a deadline that passed) in small batches and
drives each until it waits or ends. Many workers, in many processes on many
machines, share one database: each batch is claimed in one transaction
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no run is driven twice.

>>> import threading
>>> from statesaga import Engine
>>> engine = Engine("sqlite://")
>>> stop = threading.Event()
>>> stop.set()  # a worker told to stop before it starts returns at once
>>> Worker(engine).run(stop).runs
0
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import attrs

from statesaga._pump import pump
from statesaga.errors import ConcurrencyError, SagaNotRegistered
from statesaga.run import Run

if TYPE_CHECKING:
    from statesaga.engine import Engine

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("statesaga.worker")


@attrs.define
class WorkerStats:
    """What a worker did: runs driven, by the status they were left in, and errors."""

    runs: int = 0
    statuses: Counter[str] = attrs.Factory(Counter)
    errors: int = 0
    started_at: float = attrs.Factory(time.time)

    def summary(self) -> str:
        """One line for the log."""
        parts = ", ".join(f"{count} {status}" for status, count in sorted(self.statuses.items()))
        return f"{self.runs} runs driven ({parts or 'none'}), {self.errors} errors"


class Worker:
    """Drive the runs that need work, until told to stop.

    Args:
        engine: an :class:`~statesaga.Engine` with the sagas to drive registered.
        concurrency: threads driving runs at once (each claims its own batches).
        poll_interval: seconds to wait after finding nothing to do.
        batch: runs a thread claims at a time.
        log_every: seconds between progress lines in the log.
        retention_days: when set, every ``cleanup_every`` seconds (and at
            start) delete completed and compensated runs older than this.
        cleanup_every: seconds between retention cleanups.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 1,
        poll_interval: float = 1.0,
        batch: int = 10,
        log_every: float = 30.0,
        retention_days: int | None = None,
        cleanup_every: float = 3600.0,
    ) -> None:
        if concurrency < 1 or batch < 1 or poll_interval <= 0:
            raise ValueError("concurrency and batch must be >= 1, poll_interval > 0")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.batch = batch
        self.log_every = log_every
        self.retention_days = retention_days
        self.cleanup_every = cleanup_every
        self.stats = WorkerStats()
        self._lock = threading.Lock()

    def run(self, stop: threading.Event | None = None) -> WorkerStats:
        """Work until ``stop`` is set; then finish the run in hand, release the rest, return."""
        stop = stop or threading.Event()
        if stop.is_set():
            return self.stats
        names = ", ".join(sorted({d.name for d in self.engine.definitions})) or "no sagas"
        log.info(
            "worker %s started: %d thread(s), driving %s",
            self.engine.owner,
            self.concurrency,
            names,
        )
        threads = [
            threading.Thread(target=self._loop, args=(stop,), name=f"statesaga-worker-{n}")
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        next_report = time.monotonic() + self.log_every
        next_cleanup = time.monotonic()
        while any(thread.is_alive() for thread in threads):
            if self.retention_days is not None and time.monotonic() >= next_cleanup:
                self._clean_up()
                next_cleanup = time.monotonic() + self.cleanup_every
            for thread in threads:
                thread.join(timeout=0.2)
            if time.monotonic() >= next_report:
                log.info("worker %s healthy: %s", self.engine.owner, self.stats.summary())
                next_report = time.monotonic() + self.log_every
        log.info("worker %s stopped: %s", self.engine.owner, self.stats.summary())
        return self.stats

    def _clean_up(self) -> None:
        """Delete finished runs older than ``retention_days``; a failure is logged, not fatal."""
        from statesaga.retention import cleanup

        assert self.retention_days is not None
        try:
            cleanup(self.engine.store, older_than=self.retention_days * 86400.0)
        except Exception:
            log.exception("worker %s: retention cleanup failed", self.engine.owner)
            with self._lock:
                self.stats.errors += 1

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                worked = self._drive_batch(stop)
            except Exception:  # a broken database connection: log, back off, go on
                log.exception("worker %s: claiming work failed", self.engine.owner)
                with self._lock:
                    self.stats.errors += 1
                worked = False
            if not worked:
                stop.wait(self.poll_interval)

    def _drive_batch(self, stop: threading.Event) -> bool:
        engine = self.engine
        recovery = engine.runtime.recovery
        claimed = recovery.claim_due(self.batch)
        for position, row in enumerate(claimed):
            if stop.is_set():  # let the others go at once, for another worker to take
                recovery.let_go(claimed[position:])
                break
            try:
                run: Run = pump(engine.runtime, recovery.recover(row))
            except ConcurrencyError:
                continue
            except SagaNotRegistered as error:
                log.warning("worker %s: not driving %s: %s", engine.owner, row.id, error)
                continue
            except Exception:
                log.exception("worker %s: driving %s failed", engine.owner, row.id)
                with self._lock:
                    self.stats.errors += 1
                continue
            with self._lock:
                self.stats.runs += 1
                self.stats.statuses[run.status.value] += 1
        return bool(claimed)
