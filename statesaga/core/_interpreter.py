"""``Interpreter``: the core's one entry point, dispatching outcomes to the rules' rooms.

The forward path lives in :mod:`statesaga.core._forward`, the way back in
:mod:`statesaga.core._backward`, and the rules both ask about (pivots, the
deadline, event and cancel fits, due times) in :mod:`statesaga.core._rules`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from statesaga.core._backward import Backward
from statesaga.core._children import (
    ChildOutcome,
    ChildRules,
    ChildWaiting,
    CompensateRequested,
    child_transition,
)
from statesaga.core._forward import Forward
from statesaga.core._operator import OperatorRules
from statesaga.core._parallel_types import BranchFailed, BranchSucceeded
from statesaga.core._rules import Rules
from statesaga.core._types import (
    BranchChosen,
    CancelRequested,
    CompensationFailed,
    CompensationSucceeded,
    ErrorInfo,
    EventArrived,
    EventFit,
    EventJudged,
    HistoryKind,
    Next,
    Outcome,
    Record,
    ResolveRequested,
    RetryRequested,
    Snapshot,
    Status,
    StepFailed,
    StepSucceeded,
    TimeoutMeasured,
)
from statesaga.definition import Definition
from statesaga.errors import InvalidOperation

__all__ = ["Interpreter"]


class Interpreter:
    """Decides, for one definition, what an instance does next. Pure and reusable.

    Args:
        definition: the saga's compiled definition.
        rand: a source of uniform floats in [0, 1) for retry jitter.
    """

    def __init__(
        self, definition: Definition, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.definition = definition
        self.rand = rand
        self._rules = Rules(definition, rand=rand)
        self._forward = Forward(self._rules)
        self._backward = Backward(self._forward)
        self._operator = OperatorRules(self._forward)
        self._children = ChildRules(self._forward)

    # -- entry points -------------------------------------------------------------------

    def start(
        self,
        instance_id: str,
        saga_input: Any,
        data: Any,
        *,
        now: float,
        deadline: float | None = None,
    ) -> Next:
        """The first snapshot of a new instance, its START record and first decision."""
        del saga_input  # guards and steps see the input; the graph does not
        initial = self.definition.initial
        snapshot = self._forward.enter(
            Snapshot(instance_id, initial, Status.RUNNING, data, deadline=deadline),
            initial,
            now,
        )
        record = Record(HistoryKind.START, initial, initial)
        return self._forward.settle(snapshot, now, [record])

    def decide(self, snapshot: Snapshot, now: float, *, resumed: bool = False) -> Next:
        """What ``snapshot`` calls for at time ``now`` (after a sleep, or on recovery).

        ``resumed``: the snapshot was read back from the store by an engine that
        did not write it (recovery, a worker, a claim). A pivot step pending then
        may have been called before a crash: from here the run only goes forward.
        """
        if resumed and self._rules.pivot_pending(snapshot):
            snapshot = attrs.evolve(snapshot, pivot_unknown=True)
        return self._forward.settle(snapshot, now, [])

    # -- rules the drivers ask about -------------------------------------------------------

    def event_fit(self, snapshot: Snapshot, event: str, received_at: float) -> EventFit:
        """Whether an event received at ``received_at`` applies now, waits, or comes too late."""
        return self._rules.event_fit(snapshot, event, received_at)

    def guard_fit(self, snapshot: Snapshot, judged: EventJudged) -> EventFit:
        """Whether the guards' verdict on an event takes it (``"accept"``) or refuses it.

        A refused event is recorded as rejected, with the reason; the run keeps
        waiting, on the timeout it had.
        """
        return self._rules.guard_fit(snapshot, judged)

    def cancel_fit(self, snapshot: Snapshot, *, resumed: bool = False) -> EventFit:
        """Whether a cancel applies now (``"accept"``) or cannot any more (``"late"``)."""
        return self._rules.cancel_fit(snapshot, resumed=resumed)

    def next_due(self, snapshot: Snapshot, now: float) -> float | None:
        """When a run released in ``snapshot`` next needs an engine (``None``: never by itself).

        Every run that is not terminal and not held has a due time, except one that
        waits for an event with neither a timeout nor a deadline (an event for it is
        found through the inbox).
        """
        return self._rules.next_due(snapshot, now)

    def fork(
        self,
        original: Snapshot,
        history: Sequence[Record],
        step: str,
        *,
        instance_id: str,
        keyed: bool,
        now: float,
        deadline: float | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> tuple[Next, Record]:
        """A new run restarting ``original`` from ``step``; and the record linking the original.

        See :meth:`statesaga.core._operator.OperatorRules.fork` for what the fork
        starts with and when it is refused (``ForkNotAllowed``).
        """
        return self._operator.fork(
            original,
            history,
            step,
            instance_id=instance_id,
            keyed=keyed,
            now=now,
            deadline=deadline,
            note=note,
            by=by,
        )

    def fork_steps(self, original: Snapshot, history: Sequence[Record]) -> list[str]:
        """The steps a fork of ``original`` could name: those it took or tried, in order."""
        return self._operator.fork_steps(original, history)

    def guard_passes(self, transition: str, answer: object) -> bool:
        """What a guard's answer means: ``.when(g)`` passes on a true answer, ``.unless(g)``
        on a false one."""
        return bool(answer) != self.definition.transitions[transition].guard_negated

    def guard_raised(
        self, snapshot: Snapshot, transition: str, error: ErrorInfo, now: float
    ) -> Next:
        """The guard of ``transition`` raised while choosing a branch: the forward path ends
        as if that transition's step had failed, without retries."""
        pending = attrs.evolve(snapshot, pending=transition, attempt=1)
        return self._backward.step_failed(pending, attrs.evolve(error, retryable=False), now)

    def next(self, snapshot: Snapshot, outcome: Outcome | ChildOutcome, now: float) -> Next:
        """Apply ``outcome`` to ``snapshot`` at time ``now`` and decide what follows.

        Raises:
            EventNotAllowed: the event does not fit the instance's state.
            CancelNotAllowed: the instance is terminal, compensating or past its pivot.
            RetryNotAllowed: a retry was asked of an instance that is not ``failed``.
            ResolveNotAllowed: a resolve was asked of a run that is not ``failed``, as an
                outcome other than compensated or completed, or without a note.
            InvalidOperation: the outcome does not answer the pending decision.
        """
        match outcome:
            case StepSucceeded(data):
                return self._forward.step_succeeded(snapshot, data, now)
            case StepFailed(error):
                return self._backward.step_failed(snapshot, error, now)
            case BranchChosen(name):
                return self._forward.branch_chosen(snapshot, name, now)
            case EventArrived(event, payload, received_at):
                if child_transition(event) is not None:  # a child ended: read its outcome
                    return self._children.ended(snapshot, now)
                return self._forward.event(snapshot, event, payload, now, received_at)
            case ChildWaiting(child_id):
                return self._children.waiting(snapshot, child_id, now)
            case CompensateRequested():
                return self._children.compensate(snapshot, outcome, now)
            case EventJudged(event, payload, received_at):
                return self._forward.event(
                    snapshot, event, payload, now, received_at, judged=outcome
                )
            case TimeoutMeasured():
                return self._forward.timeout_measured(snapshot, outcome, now)
            case CancelRequested(reason, details):
                return self._backward.cancel(snapshot, reason, details, now)
            case CompensationSucceeded(data):
                return self._backward.compensated(snapshot, data, now)
            case CompensationFailed(error):
                return self._backward.compensation_failed(snapshot, error, now)
            case RetryRequested():
                return self._backward.retry_requested(snapshot, now)
            case ResolveRequested():
                return self._operator.resolve(snapshot, outcome, now)
            case BranchSucceeded():
                return self._forward.parallel.succeeded(snapshot, outcome, now)
            case BranchFailed():
                return self._forward.parallel.failed(snapshot, outcome, now)
        raise InvalidOperation(f"unknown outcome {outcome!r}")  # pragma: no cover
