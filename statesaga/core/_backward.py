"""The way back: failed steps, cancels, compensations and retries of failed runs.

A failure either retries (the step's or the compensation's policy), or
stops the run through :meth:`~statesaga.core._rules.Rules.stop`, the one
place that decides between compensating and, past the pivot, ``failed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from statesaga.core._forward import Forward
from statesaga.core._types import (
    ErrorInfo,
    ErrorKind,
    Finish,
    HistoryKind,
    Next,
    Record,
    Snapshot,
    Status,
    undo_name,
)
from statesaga.definition import TransitionDef
from statesaga.errors import CancelNotAllowed, InvalidOperation, RetryNotAllowed

__all__ = ["Backward"]


class Backward:
    """The failure, cancel, compensation and retry rules of one definition."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self.rules = forward.rules
        self.definition = forward.definition
        self._transitions = forward.rules.transitions

    def step_failed(self, snapshot: Snapshot, error: ErrorInfo, now: float) -> Next:
        """The pending step raised: retry it, compensate, or (bound) fail."""
        t = self.forward.pending(snapshot, Status.RUNNING)
        error = attrs.evolve(error, step=t.name)
        # a transition without a step fails only through its guard: never retried
        policy = t.step.retry if t.step is not None else None
        if policy is not None and error.retryable and not policy.exhausted(snapshot.attempt):
            delay = policy.delay(snapshot.attempt, self.rules.rand())
            retried = attrs.evolve(
                snapshot, attempt=snapshot.attempt + 1, wake_at=now + delay, error=error
            )
            record = Record(HistoryKind.RETRY, t.source, t.source, t.name, snapshot.attempt, error)
            return self.forward.settle(retried, now, [record])
        records = [Record(HistoryKind.FAILURE, t.source, t.source, t.name, snapshot.attempt, error)]
        stopped = self.rules.stop(snapshot, error, None, records, step_failed=True)
        return self.forward.settle(stopped, now, records)

    def cancel(
        self, snapshot: Snapshot, reason: str, details: Mapping[str, Any], now: float
    ) -> Next:
        """Someone asked to cancel: compensate, unless the cancel no longer fits."""
        fit = self.rules.cancel_fit(snapshot)
        if not fit.accepted:
            raise CancelNotAllowed(
                f"instance {snapshot.instance_id} cannot be cancelled: {fit.reason}",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        error = ErrorInfo(
            "Cancelled", reason, retryable=False, kind=ErrorKind.CANCELLED, details=details
        )
        records: list[Record] = []
        compensating = self.rules.stop(snapshot, error, HistoryKind.CANCEL, records)
        return self.forward.settle(compensating, now, records)

    def _top(self, snapshot: Snapshot) -> TransitionDef:
        if snapshot.status is not Status.COMPENSATING or not snapshot.stack:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not compensating",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        return self._transitions[snapshot.stack[-1].transition]

    def compensated(self, snapshot: Snapshot, data: Any, now: float) -> Next:
        """The compensation on top of the stack returned: step back to its source state."""
        t = self._top(snapshot)
        record = Record(HistoryKind.COMPENSATE, snapshot.state, t.source, t.name, snapshot.attempt)
        popped = attrs.evolve(
            snapshot,
            state=t.source,
            stack=snapshot.stack[:-1],
            attempt=1,
            wake_at=None,
            data=snapshot.data if data is None else data,
        )
        return self.forward.settle(popped, now, [record])

    def compensation_failed(self, snapshot: Snapshot, error: ErrorInfo, now: float) -> Next:
        """The compensation on top of the stack raised: retry it, or fail, visibly."""
        t = self._top(snapshot)
        assert t.step is not None
        policy = t.step.compensation_retry
        error = attrs.evolve(error, step=undo_name(t.name))
        record_kind = HistoryKind.COMPENSATION_RETRY
        if error.retryable and not policy.exhausted(snapshot.attempt):
            delay = policy.delay(snapshot.attempt, self.rules.rand())
            retried = attrs.evolve(snapshot, attempt=snapshot.attempt + 1, wake_at=now + delay)
            record = Record(
                record_kind, snapshot.state, snapshot.state, t.name, snapshot.attempt, error
            )
            return self.forward.settle(retried, now, [record])
        failed = attrs.evolve(snapshot, status=Status.FAILED, error=error, wake_at=None)
        record = Record(
            HistoryKind.FAILURE, snapshot.state, snapshot.state, t.name, snapshot.attempt, error
        )
        return Next(failed, Finish(Status.FAILED), (record,))

    def retry_requested(self, snapshot: Snapshot, now: float) -> Next:
        """Someone asked a failed run to try again: go on from where it stopped."""
        if snapshot.status is not Status.FAILED:
            raise RetryNotAllowed(
                f"instance {snapshot.instance_id} is {snapshot.status}; only a failed instance "
                "can be retried",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        if snapshot.pivot_unknown and snapshot.pending is not None:
            # the pivot may have taken effect: try it again rather than compensate
            resumed = attrs.evolve(snapshot, status=Status.RUNNING, attempt=1, wake_at=None)
        elif not snapshot.pivoted:
            resumed = attrs.evolve(snapshot, status=Status.COMPENSATING, attempt=1, wake_at=None)
        elif snapshot.pending is not None:
            resumed = attrs.evolve(snapshot, status=Status.RUNNING, attempt=1, wake_at=None)
        else:
            resumed = self.forward.enter(snapshot, snapshot.state, now)
        record = Record(HistoryKind.RESUME, snapshot.state, snapshot.state, snapshot.pending)
        return self.forward.settle(resumed, now, [record])
