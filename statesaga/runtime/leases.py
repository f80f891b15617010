"""The lease keeper: one thread that renews the leases of the runs an engine holds.

A run's row lease and its entity lock are renewed once a third of the lease
has passed since the run last wrote or was renewed. Every run due in a round
is renewed by one statement (the store's ``extend_leases``), so the cost of a
round does not grow with the runs in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from statesaga.runtime.held import HeldRun
from statesaga.runtime.locking import LockPort
from statesaga.runtime.reporting import log, log_extra
from statesaga.store.base import Store

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """Renews the leases of the runs it tracks, from a daemon thread started on demand."""

    def __init__(
        self, store: Store, locks: LockPort, lease_ttl: float, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.locks = locks
        self.lease_ttl = lease_ttl
        self.clock = clock
        self._held: dict[str, HeldRun] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def track(self, run: HeldRun) -> None:
        """Keep ``run``'s leases alive from now on."""
        run.renewed_at = self.clock()
        with self._lock:
            self._held[run.id] = run
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._keep, name="statesaga-lease-keeper", daemon=True
                )
                self._thread.start()

    def untrack(self, run: HeldRun) -> None:
        """Stop renewing ``run``'s leases."""
        with self._lock:
            self._held.pop(run.id, None)

    def stop(self) -> None:
        """Stop the keeper's thread (at its next round)."""
        self._stopping.set()

    def _keep(self) -> None:
        interval = self.lease_ttl / 3
        while not self._stopping.wait(interval / 2):
            now = self.clock()
            with self._lock:
                runs = list(self._held.values())
            due = [
                run
                for run in runs
                if now - run.renewed_at >= interval
                # an overrunning step loses its lease; recovery takes over
                and (run.step_deadline is None or now <= run.step_deadline)
            ]
            if due:
                self._renew(due, now)

    def _renew(self, due: list[HeldRun], now: float) -> None:
        """Renew ``due`` in one statement (each expiry taken when it is written)."""
        try:
            kept = self.store.extend_leases(
                [(run.id, run.epoch) for run in due], self.clock() + self.lease_ttl
            )
        except Exception:  # the next transition's compare-and-set has the last word
            log.exception("renewing %d leases failed", len(due))
            return
        for run in due:
            ok = run.id in kept
            if run.lease is not None and self.locks.locks is not None:
                try:
                    renewed = self.locks.renew(run.lease, self.clock())
                except Exception:
                    log.exception("renewing the lock of %s failed", run.id, extra=log_extra(run))
                    renewed = None
                ok = ok and renewed is not None
                run.lease = renewed or run.lease
            run.renewed_at = now
            if not ok and not run.lost:
                run.lost = True
                log.warning("lost the lease of %s", run.id, extra=log_extra(run))
