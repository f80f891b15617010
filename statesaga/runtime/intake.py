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
    HistoryKind,
    Next,
    Outcome,
    Record,
    Sleep,
)
from statesaga.delivery import DeliveryStatus
from statesaga.runtime.codec import payload_of
from statesaga.runtime.held import HeldRun
from statesaga.store.base import InboxRow, Settle

if TYPE_CHECKING:
    from statesaga.runtime.reporting import Reporter

__all__ = ["UNDECIDED", "apply_inbox"]

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

    ``None`` when every entry is early (kept until a state takes it).
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
            snapshot, decision = applied.snapshot, applied.decision
            records.extend(applied.records)
            settles.append(Settle(entry.id, DeliveryStatus.ACCEPTED.value, None, now))
            continue
        reporter.rejected(run, entry.kind, entry.event, fit.reason)
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
