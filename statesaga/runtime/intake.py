"""Taking a run's pending inbox entries: each accepted, kept for later, or rejected.

The core judges every entry (``event_fit``, ``cancel_fit``); this applies its
verdicts to the run's next step and says how each entry is settled. Nothing
here writes: the transition that follows persists the result and the
settlements together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from statesaga.core import (
    CancelRequested,
    ErrorInfo,
    ErrorKind,
    EventArrived,
    EventFit,
    EventJudged,
    HistoryKind,
    JudgeEvent,
    Next,
    Outcome,
    Record,
    Sleep,
    Snapshot,
)
from statesaga.delivery import DeliveryStatus
from statesaga.runtime.codec import payload_of
from statesaga.runtime.held import HeldRun
from statesaga.store.base import InboxRow, Settle

if TYPE_CHECKING:
    from statesaga.runtime.reporting import Reporter

__all__ = ["UNDECIDED", "any_to_take", "apply_inbox", "apply_judgment"]

#: the decision of a Next whose inbox entries are applied before anything is decided
UNDECIDED = Sleep(float("-inf"))


def apply_inbox(
    run: HeldRun,
    nxt: Next,
    pending: list[InboxRow],
    now: float,
    resumed: bool,
    reporter: Reporter,
) -> tuple[Next, list[Settle]] | None:
    """``nxt`` with the inbox entries applied (and the rejected ones recorded).

    ``None`` when every entry is early (kept until a state takes it). An event
    that guards must judge first stops the intake there: the answer's decision
    is the core's ``JudgeEvent``, the entry is kept as ``run.judging`` and it
    (and every entry after it) stays pending until the guards have answered.
    """
    core = run.core
    snapshot, decision, records = nxt.snapshot, nxt.decision, list(nxt.records)
    settles: list[Settle] = []
    for entry in pending:
        assert entry.id is not None
        fit: EventFit
        if entry.kind == "cancel":
            fit = core.cancel_fit(snapshot, resumed=resumed)
            asked = entry.payload or {}
            outcome: Outcome = CancelRequested(
                asked.get("reason", "cancelled"), asked.get("details") or {}
            )
            rejected = ErrorInfo(
                "CancelRejected", fit.reason or "", retryable=False, kind=ErrorKind.REJECTED
            )
        else:
            assert entry.event is not None
            fit = core.event_fit(snapshot, entry.event, entry.received_at)
            if fit.verdict == "early":
                continue  # kept until a state takes it
            payload = payload_of(run.definition, snapshot, entry)
            outcome = EventArrived(entry.event, payload, entry.received_at)
            rejected = ErrorInfo(
                "EventRejected", fit.reason or "", retryable=False, kind=ErrorKind.REJECTED
            )
        if fit.accepted:
            applied = core.next(snapshot, outcome, now)
            if isinstance(applied.decision, JudgeEvent):
                run.judging = entry
                return Next(snapshot, applied.decision, tuple(records)), settles
            snapshot, decision = applied.snapshot, applied.decision
            records.extend(applied.records)
            settles.append(Settle(entry.id, DeliveryStatus.ACCEPTED.value, None, now))
            continue
        reporter.rejected(run, entry.kind, entry.event, fit.reason)
        records.append(_rejection(snapshot, entry, rejected))
        settles.append(Settle(entry.id, DeliveryStatus.REJECTED.value, fit.reason, now))
    if not settles:
        return None
    return Next(snapshot, decision, tuple(records)), settles


def any_to_take(run: HeldRun, pending: list[InboxRow], now: float) -> bool:
    """Whether the run can settle one of its pending entries now (take it, or reject it);
    ``False`` when each is early, kept for a state the run has not reached."""
    core, current = run.core, run.snapshot
    for entry in pending:
        if entry.kind == "cancel":
            return True
        assert entry.event is not None
        if core.event_fit(current, entry.event, entry.received_at).verdict != "early":
            return True
    return False


def apply_judgment(
    run: HeldRun, judged: EventJudged, now: float, reporter: Reporter
) -> tuple[Next, Settle]:
    """The event ``run.judging`` taken (its guards passed) or refused, and its settlement.

    A refused event is recorded as rejected with the reason the core gives; the
    run keeps waiting on the timeout it had (the wait is not restarted).
    """
    entry = run.judging
    assert entry is not None
    assert entry.id is not None
    run.judging = None
    core, snapshot = run.core, run.snapshot
    fit = core.guard_fit(snapshot, judged)
    if fit.accepted:
        return core.next(snapshot, judged, now), Settle(
            entry.id, DeliveryStatus.ACCEPTED.value, None, now
        )
    reason = fit.reason or ""
    reporter.rejected(run, entry.kind, entry.event, reason)
    record = _rejection(snapshot, entry, ErrorInfo("GuardRefused", reason, retryable=False))
    waiting = core.decide(snapshot, now)
    return (
        Next(waiting.snapshot, waiting.decision, (record, *waiting.records)),
        Settle(entry.id, DeliveryStatus.REJECTED.value, reason, now),
    )


def _rejection(snapshot: Snapshot, entry: InboxRow, error: ErrorInfo) -> Record:
    return Record(HistoryKind.REJECTED, snapshot.state, snapshot.state, None, 0, error, entry.event)
