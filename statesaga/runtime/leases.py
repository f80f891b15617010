"""The lease keeper: one thread that renews the leases of the runs an engine holds.

A run's row lease and its entity lock are renewed about every third of the
ttl. The keeper looks every twelfth of the ttl (counted from the start of its
last look, so a slow round is followed at once by the next, never by a full
pause) and renews the runs due, oldest first, in slices of ``RENEW_SLICE``:
each slice is one statement for the row leases (the store's
``extend_leases``) and one batch for the entity locks (the locks'
``renew_many`` where they have it). Each slice's expiry is taken when it is
sent, and a run counts as renewed from then: runs renewed late in a long
round come due late in the next, so rounds spread out instead of growing.

The keeper also bounds the work an engine takes on (``max_in_flight``): every
operation that holds a run (a start, a claim, a recovered run) takes a slot
first, and none is given while the engine is full, or while the keeper is
late: it renewed (or has yet to renew) a lease more than ``LATE`` of the ttl
after its last renewal, holding at least ``LATE_LEASES`` of them. New work is
then refused (``EngineOverloaded``, or a worker claims fewer runs) before the
leases of the runs in flight lapse.

>>> from statesaga import Engine
>>> with Engine("sqlite://", max_in_flight=2) as engine:
...     keeper = engine.runtime.keeper
...     keeper.reserve(5)  # a claim of five runs may take two
...     keeper.stats().in_flight
2
2
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

import attrs

from statesaga.errors import EngineOverloaded
from statesaga.locks.base import Lease
from statesaga.runtime.held import HeldRun
from statesaga.runtime.locking import LockPort
from statesaga.runtime.reporting import log, log_extra
from statesaga.store.base import InstanceRow, Store

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "Claimed",
    "LATE",
    "LATE_LEASES",
    "RENEW_SLICE",
    "LeaseKeeper",
    "LeaseStats",
]

#: runs an engine holds at once by default: measured to renew without a lapse on
#: PostgreSQL at the default 30 s ttl (benchmarks/leases.py)
DEFAULT_MAX_IN_FLIGHT = 100_000
#: leases renewed per statement (and per batch of lock renewals)
RENEW_SLICE = 5_000
#: a lease renewed this share of the ttl after its last renewal (a third, when the keeper
#: keeps up) has half its ttl left: new work is refused until the keeper catches up
LATE = 0.5
#: ...when the keeper holds at least this many leases (a keeper with a few is late for other
#: reasons, such as a database hiccup, that refusing work does not cure)
LATE_LEASES = 1_000


@attrs.frozen
class LeaseStats:
    """What the lease keeper holds and has done, for a health check or a metric.

    Attributes:
        in_flight: operations holding a run (or about to) now.
        max_in_flight: the engine's bound (``None``: none).
        held: runs whose leases the keeper renews now.
        rounds: rounds of renewals so far.
        renewed: leases renewed (row and, with entity locks, lock) so far.
        lost: leases found lost when renewing (another holder took the run).
        last_round_seconds: how long the last round took.
        last_round_leases: how many leases it renewed.
        longest_round_seconds: the longest round so far.
        last_round_oldest: the most seconds between two renewals of one lease in the last
            round (a third of the ttl when the keeper keeps up; the ttl when it lapsed).
        late: the keeper is late (see ``LATE``): new work is refused until it is not.
    """

    in_flight: int
    max_in_flight: int | None
    held: int
    rounds: int
    renewed: int
    lost: int
    last_round_seconds: float
    last_round_leases: int
    longest_round_seconds: float
    last_round_oldest: float
    late: bool


@attrs.define(eq=False)
class Claimed:
    """A run claimed with a batch, waiting its turn to be driven: its row lease is kept.

    ``lost`` says another engine took it over meanwhile (the renewal found its
    epoch moved on): it must not be driven.
    """

    id: str
    epoch: int
    renewed_at: float
    step_deadline: float | None = None
    lease: Lease | None = None  # entity locks are taken when the run is driven
    lost: bool = False


class LeaseKeeper:
    """Renews the leases of the runs it tracks, from a daemon thread started on demand."""

    def __init__(
        self,
        store: Store,
        locks: LockPort,
        lease_ttl: float,
        clock: Callable[[], float],
        max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.locks = locks
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.max_in_flight = max_in_flight
        self._held: dict[str, HeldRun | Claimed] = {}
        self._slots = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._rounds = self._renewed = self._lost = self._last_leases = 0
        self._last_seconds = self._longest_seconds = self._last_oldest = 0.0
        # while a round runs: when the oldest lease it has yet to renew was last renewed
        self._pending_since: float | None = None

    # -- admission ---------------------------------------------------------------------------

    def reserve(self, wanted: int = 1) -> int:
        """Take up to ``wanted`` slots for runs about to be held; how many were taken.

        None while the keeper is late (see ``LATE``); give each back with
        :meth:`release` when its run is let go (or was never taken).
        """
        with self._lock:
            if self._late_now():
                return 0
            room = wanted if self.max_in_flight is None else self.max_in_flight - self._slots
            taken = max(0, min(wanted, room))
            self._slots += taken
            return taken

    def admit(self, what: str, *, saga: str | None = None, instance_id: str | None = None) -> None:
        """Take one slot for ``what`` (``"start"``...), or raise :class:`EngineOverloaded`."""
        if self.reserve(1):
            return
        stats = self.stats()
        if stats.late:
            reason = (
                f"its lease keeper is late: it renews leases over {LATE:.0%} of lease_ttl "
                f"({self.lease_ttl:g} s) after their last renewal, holding {stats.held:,}"
            )
        else:
            reason = f"it holds {stats.in_flight:,} runs, its max_in_flight"
        raise EngineOverloaded(
            f"this engine refused a {what}: {reason}; new work waits until runs in flight "
            "finish, so that their leases keep being renewed. Retry later, spread the work "
            "over more engine processes, or raise max_in_flight if the database renews "
            "that many leases in time (see docs/production.md)",
            in_flight=stats.in_flight,
            limit=self.max_in_flight,
            saga=saga,
            instance_id=instance_id,
        )

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots taken by :meth:`reserve` or :meth:`admit`."""
        with self._lock:
            self._slots = max(0, self._slots - count)

    def stats(self) -> LeaseStats:
        """What the keeper holds and has done, now."""
        with self._lock:
            return LeaseStats(
                in_flight=self._slots,
                max_in_flight=self.max_in_flight,
                held=len(self._held),
                rounds=self._rounds,
                renewed=self._renewed,
                lost=self._lost,
                last_round_seconds=self._last_seconds,
                last_round_leases=self._last_leases,
                longest_round_seconds=self._longest_seconds,
                last_round_oldest=self._last_oldest,
                late=self._late_now(),
            )

    def _late_now(self) -> bool:
        """The keeper renews (or has yet to renew) leases late (called with ``_lock`` held)."""
        if self.max_in_flight is None or len(self._held) < LATE_LEASES:
            return False
        limit = self.lease_ttl * LATE
        pending = self._pending_since
        return self._last_oldest > limit or (pending is not None and self.clock() - pending > limit)

    # -- tracking ----------------------------------------------------------------------------

    def track(self, run: HeldRun) -> None:
        """Keep ``run``'s leases alive from now on (renewed as of ``run.renewed_at`` if set)."""
        if not run.renewed_at:
            run.renewed_at = self.clock()
        with self._lock:
            self._held[run.id] = run
            self._start_thread()

    def _start_thread(self) -> None:
        """Start the keeper's thread unless it runs (called with ``_lock`` held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._keep, name="statesaga-lease-keeper", daemon=True
            )
            self._thread.start()

    def untrack(self, run: HeldRun) -> None:
        """Stop renewing ``run``'s leases."""
        with self._lock:
            self._held.pop(run.id, None)

    def track_claimed(self, rows: Iterable[InstanceRow]) -> None:
        """Keep the row leases of runs claimed with a batch until each is driven or let go.

        The runs further down a batch wait while those before them are driven,
        perhaps longer than the ttl; :meth:`track` of the run driven replaces
        its entry, :meth:`forget_claimed` drops one let go.
        """
        now = self.clock()
        for row in rows:
            expires = row.lease_expires_at
            renewed = now if expires is None else min(now, expires - self.lease_ttl)
            with self._lock:
                self._held.setdefault(row.id, Claimed(row.id, row.epoch, renewed))
        with self._lock:
            self._start_thread()

    def claimed(self, instance_id: str) -> Claimed | None:
        """The claimed run ``instance_id`` waiting its turn, if it is tracked as one."""
        with self._lock:
            found = self._held.get(instance_id)
        return found if isinstance(found, Claimed) else None

    def forget_claimed(self, instance_id: str) -> None:
        """Stop renewing a claimed run that is let go (nothing if it is being driven)."""
        with self._lock:
            if isinstance(self._held.get(instance_id), Claimed):
                del self._held[instance_id]

    def stop(self) -> None:
        """Stop the keeper's thread (at its next round)."""
        self._stopping.set()

    # -- renewing ----------------------------------------------------------------------------

    def _keep(self) -> None:
        cadence = self.lease_ttl / 12
        # renewed every third of the ttl on average: due a little before, looked at every cadence
        due_after = self.lease_ttl / 3 - cadence / 2
        began = time.monotonic()
        while not self._stopping.wait(max(0.0, began + cadence - time.monotonic())):
            began = time.monotonic()
            now = self.clock()
            with self._lock:
                runs = list(self._held.values())
            due = [
                run
                for run in runs
                if now - run.renewed_at >= due_after
                # an overrunning step loses its lease; recovery takes over
                and (run.step_deadline is None or now <= run.step_deadline)
            ]
            if due:
                due.sort(key=lambda run: run.renewed_at)
                self._round(due, began)

    def _round(self, due: list[HeldRun | Claimed], began: float) -> None:
        lost, oldest = 0, 0.0
        try:
            for start in range(0, len(due), RENEW_SLICE):
                if self._stopping.is_set():
                    break  # the engine is closing: its runs are let go, not renewed
                part = due[start : start + RENEW_SLICE]
                with self._lock:
                    self._pending_since = part[0].renewed_at
                lost_here, age = self._renew(part)
                lost, oldest = lost + lost_here, max(oldest, age)
        finally:
            seconds = time.monotonic() - began
            with self._lock:
                self._pending_since = None
                self._rounds += 1
                self._renewed += len(due) - lost
                self._lost += lost
                self._last_seconds, self._last_leases = seconds, len(due)
                self._longest_seconds = max(self._longest_seconds, seconds)
                self._last_oldest = oldest
        if oldest > self.lease_ttl * LATE:
            log.warning(
                "renewing %d leases took %.2f s; one was renewed %.1f s after its last "
                "renewal, over %.0f%% of the lease ttl (%g s)%s",
                len(due),
                seconds,
                oldest,
                LATE * 100,
                self.lease_ttl,
                ": new work is refused until the keeper catches up"
                if self.max_in_flight is not None and len(due) >= LATE_LEASES
                else "",
            )

    def _renew(self, due: Sequence[HeldRun | Claimed]) -> tuple[int, float]:
        """Renew one slice (oldest first): one statement, one batch of locks.

        Returns how many leases were lost, and the most seconds since a lease's
        last renewal at the moment it was renewed.
        """
        sent = self.clock()  # the expiry is taken as the statement is sent
        # a run being started whose row is not written yet has no row lease to lose: it is
        # written (with a fresh lease) in its first step's transaction
        unsaved = {run.id for run in due if isinstance(run, HeldRun) and run.unsaved is not None}
        try:
            kept = (
                self.store.extend_leases(
                    [(run.id, run.epoch) for run in due if run.id not in unsaved],
                    sent + self.lease_ttl,
                )
                | unsaved
            )
        except Exception:  # the next transition's compare-and-set has the last word
            log.exception("renewing %d leases failed", len(due))
            return 0, 0.0
        locked = [run for run in due if run.lease is not None]
        renewed: dict[str, bool] = {}
        if locked and self.locks.locks is not None:
            leases = [run.lease for run in locked if run.lease is not None]
            answers: list[Lease | None]
            try:
                answers = self.locks.renew_many(leases, self.clock())
            except TimeoutError:
                # an async batch still waiting for its event loop: under way, not lost
                log.warning(
                    "renewing the locks of %d runs is taking over a third of the lease ttl "
                    "(a busy event loop?); they are renewed again next round",
                    len(locked),
                )
                answers = list(leases)
            except Exception:
                if not self._stopping.is_set():  # (closing, the loop may be gone: no news)
                    log.exception("renewing the locks of %d runs failed", len(locked))
                answers = [None] * len(locked)
            for run, answer in zip(locked, answers, strict=True):
                renewed[run.id] = answer is not None
                run.lease = answer or run.lease
        oldest = sent - due[0].renewed_at
        lost = 0
        for run in due:
            run.renewed_at = sent
            if run.id in kept and renewed.get(run.id, True):
                continue
            lost += 1
            if not run.lost:
                run.lost = True
                extra = log_extra(run) if isinstance(run, HeldRun) else {"instance_id": run.id}
                log.warning("lost the lease of %s", run.id, extra=extra)
        return lost, oldest
