"""Persisting a held run's transitions: one compare-and-set write per transition.

Every write is checked on (version, epoch), so a holder that lost its claim
is rejected (``FencedOut``) before it starts another side effect. A write
that lets the run go always says when it is next due (the liveness rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from statesaga.core import Finish, Next, Status, Wait
from statesaga.runtime.codec import Leasing, history_rows, write_of
from statesaga.runtime.held import HeldRun
from statesaga.runtime.intake import UNDECIDED, any_to_take, apply_inbox
from statesaga.runtime.reporting import Reporter
from statesaga.store.base import Settle, Store

__all__ = ["BUSY_RETRY", "Transitions"]

#: how long (seconds) a claim's look at the inbox stands in for reading it when the run resumes
CLAIM_SEEN_FRESH = 1.0

#: seconds before a run whose entity lock was busy at recovery is looked at again
BUSY_RETRY = 0.5
#: seconds before a waiting run whose inbox holds only events for later states is looked at
#: again (an event it can take is consumed by its sender at once)
EARLY_RETRY = 5.0


class Transitions:
    """Writes a held run's transitions (and the inbox entries they settle) to the store."""

    def __init__(
        self, store: Store, leasing: Leasing, clock: Callable[[], float], reporter: Reporter
    ) -> None:
        self.store = store
        self.leasing = leasing
        self.clock = clock
        self.reporter = reporter

    def persist(
        self,
        run: HeldRun,
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
        if isinstance(nxt.decision, Wait) and nxt.records and run.unsaved is None:
            # (a run not written yet has no inbox; a step's transaction reads in itself,
            # never waiting for a second pooled connection)
            settled = {entry.id for entry in settle}
            pending = [e for e in self.store.pending(run.id, connection) if e.id not in settled]
            if pending:
                applied = apply_inbox(
                    run, nxt, pending, self.clock(), resumed=False, reporter=self.reporter
                )
                if applied is not None:
                    nxt, more = applied
                    settle = [*settle, *more]
        if run.unsaved is not None and connection is None:
            self.save(run)  # the start goes first, on its own
        if not nxt.records and not settle:
            run.snapshot = nxt.snapshot
            return nxt
        now = self.clock()
        write = write_of(run, nxt.snapshot, nxt.decision, now, self.leasing)
        rows = history_rows(run, nxt, started, now, version=run.version + 1)
        unsaved = run.unsaved
        if unsaved is None:
            self.store.transition(
                run.id, run.version, run.epoch, write, rows, connection, settle=settle
            )
        else:
            # the start and the first step's transition, in the step's transaction
            row, first = unsaved
            self.store.insert(row, [*first, *rows], connection=connection, write=write)
            run.unsaved = None  # (its start is reported once the step's transaction commits)
        run.version += 1
        run.snapshot = nxt.snapshot
        run.leased = write.lease_owner is not None
        run.stored = (write.status, write.due_at, write.lease_owner)
        run.updated_at = now
        if "lease_expires_at" not in write.keep:
            run.renewed_at = now  # the write renewed the lease
        if nxt.snapshot.status is not Status.COMPLETED:
            run.output = None
        self.reporter.transitions(run, nxt)
        if connection is None and isinstance(nxt.decision, Finish):
            self.reporter.finished(run, now)  # a step's own transaction reports once it commits
        return nxt

    def save(self, run: HeldRun) -> None:
        """Insert a run being started whose row is not written yet (see ``HeldRun.unsaved``).

        Raises ``EntityBusy`` (or ``DuplicateStart``) as a start's insert does.
        """
        assert run.unsaved is not None
        row, first = run.unsaved
        if row.lease_owner is not None:  # its lease runs from now, however long the step took
            now = self.clock()
            row = attrs.evolve(row, lease_expires_at=now + self.leasing.lease_ttl)
            run.renewed_at = now
        self.store.insert(row, first)
        run.unsaved = None
        run.stored = (row.status, row.due_at, row.lease_owner)
        self.reporter.started(run)

    def take_inbox(self, run: HeldRun, now: float, *, resumed: bool) -> Next | None:
        """Apply (or reject) the run's pending inbox entries, persisted in one transition.

        Returns what to do next, or ``None`` if nothing was pending (or all of it
        is early, waiting for a later state).
        """
        known, run.inbox_pending = run.inbox_pending, None
        if known is False and now - run.updated_at <= CLAIM_SEEN_FRESH:
            # the claim (which set updated_at) saw an empty inbox a moment ago; anything
            # received since is taken before the run waits or retries, as for any holder
            return None
        pending = self.store.pending(run.id)
        if not pending:
            return None
        applied = apply_inbox(
            run, Next(run.snapshot, UNDECIDED), pending, now, resumed, self.reporter
        )
        if applied is None:
            return None
        nxt, settles = applied
        if nxt.decision is UNDECIDED:  # nothing was accepted: decide as of now
            decided = run.core.decide(nxt.snapshot, now, resumed=resumed)
            nxt = Next(decided.snapshot, decided.decision, nxt.records + decided.records)
        done = self.persist(run, nxt, now, settle=settles)
        return Next(done.snapshot, done.decision)  # persisted: nothing left to write

    def next_step(self, run: HeldRun, now: float) -> Next:
        """What a run just claimed does first: take its inbox, or decide as of ``now``."""
        return self.take_inbox(run, now, resumed=True) or run.core.decide(
            run.snapshot, now, resumed=True
        )

    def release(self, run: HeldRun, *, busy: bool = False) -> None:
        """Give up the instance row's lease without a transition.

        The run keeps a due time whenever it is not terminal (the liveness
        invariant), so recovery finds it again; ``busy`` (its entity lock was
        held by someone else) puts that time a little later.
        """
        if run.unsaved is not None:
            self.save(run)
        now = self.clock()
        due = run.core.next_due(run.snapshot, now)
        not_before = None
        pending = [] if busy else self.store.pending(run.id)
        if pending and not any_to_take(run, pending, now):
            # what is pending is for a later state (a run backing off before its wait, or
            # waiting for another event): look again now and then, or when it is due, not
            # at once, or recovery would claim it over and over for nothing
            not_before = now + EARLY_RETRY if due is None else min(due, now + EARLY_RETRY)
        if busy:
            # a released run's lease expiry is when it may be claimed again: not at once,
            # even for events in its inbox, or recovery would spin on a held entity
            not_before = now + BUSY_RETRY
            if due is not None:
                due = max(due, not_before)
        write = attrs.evolve(
            write_of(run, run.snapshot, None, now, self.leasing),
            lease_owner=None,
            lease_expires_at=not_before,
            due_at=due,
            keep=frozenset(),
        )
        self.store.transition(run.id, run.version, run.epoch, write, [])
        run.version += 1
        run.leased = False
        run.stored = (write.status, write.due_at, None)
