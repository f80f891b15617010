"""Child sagas: a parent's child step starts a run of another saga and waits for it.

The step makes the child's input (a ``Call``), then starts the child through
the runtime's own ``start`` under an idempotency key derived from the step's
(``core.child_key``), with the parent's correlation id: the child is driven at
once, inside the parent's step. A child that ends there gives the step its
outcome; one that waits leaves the parent ``waiting`` (``core.ChildWaiting``).
When such a child ends (in whichever engine drives it), :meth:`Children.ended`
records ``core.child_event`` in the parent's inbox, deduplicated by the child's
id, and consumes it if the parent is free: the parent runs its step again,
finds the ended child and reads its outcome. Undoing a child step compensates
a completed child (``core.CompensateRequested``) or cancels an open one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, Protocol

from statesaga.context import Resources, StepContext
from statesaga.core import (
    ChildOutcome,
    ChildWaiting,
    CompensateRequested,
    CompensationFailed,
    CompensationSucceeded,
    ErrorInfo,
    ErrorKind,
    Next,
    Outcome,
    RetryRequested,
    RunCompensation,
    RunStep,
    Status,
    StepFailed,
    Wait,
    child_event,
    child_event_id,
    child_key,
    parent_of,
)
from statesaga.definition import ChildDef, Definition, TransitionDef, children_of
from statesaga.delivery import Delivery, DeliveryStatus
from statesaga.errors import EntityBusy, FencedOut, StateSagaError
from statesaga.failures import capture
from statesaga.run import Run
from statesaga.runtime.drive import Drive
from statesaga.runtime.held import HeldRun
from statesaga.runtime.inbox import Inbox
from statesaga.runtime.reads import Reads
from statesaga.runtime.requests import Call, Driver, Request, Response
from statesaga.store.base import InboxRow

__all__ = ["Children"]

log = logging.getLogger("statesaga.runtime")


class _Start(Protocol):
    def __call__(
        self,
        saga: Definition,
        saga_input: Any,
        *,
        key: str | None,
        idempotency_key: str | None,
        correlation_id: str | None,
        deadline: None,
        wait: float,
    ) -> Driver: ...


_Operate = Callable[[str, "Outcome | ChildOutcome | None", float, str], Driver]


class Children:
    """Runs child steps and their undos for the drive loop, and tells parents of ended children."""

    def __init__(
        self,
        drive: Drive,
        inbox: Inbox,
        reads: Reads,
        resources: Resources,
        clock: Callable[[], float],
        start: _Start,
        operate: _Operate,
    ) -> None:
        self.drive = drive
        self.inbox = inbox
        self.reads = reads
        self.store = reads.store
        self.resources = resources
        self.clock = clock
        self.start = start
        self.operate = operate
        #: keys of children being started inside their parent's step: their end is read
        #: there, not reported to the parent's inbox
        self.inline: set[str] = set()

    # -- the child step ----------------------------------------------------------------

    def run_step(self, run: HeldRun, decision: RunStep) -> Generator[Request, Any, Next]:
        """Make the child's input, start (or find) the child, and report what became of it."""
        t = run.definition.transitions[decision.transition]
        step = t.step
        assert step is not None
        assert step.child is not None
        started = self.clock()
        ctx = self._context(run, t.name, decision.attempt, decision.idempotency_key)
        response = yield Call(step.function, ctx, step.timeout)
        outcome: Outcome | ChildOutcome
        if response.error is not None:
            retryable = step.retry.is_retryable(response.error)
            outcome = StepFailed(capture(response.error, retryable=retryable))
        else:
            key = child_key(decision.idempotency_key)
            self.inline.add(key)
            try:
                child: Run | None = yield from self.start(
                    step.child.definition,
                    response.value,
                    key=None,
                    idempotency_key=key,
                    correlation_id=run.correlation_id,
                    deadline=None,
                    wait=0.0,
                )
            except StateSagaError as error:  # bad input, a full engine...
                child = None
                retryable = isinstance(error, EntityBusy | FencedOut)
                outcome = StepFailed(capture(error, retryable=retryable))
            finally:
                self.inline.discard(key)
            if child is not None:
                if not child.status.is_terminal:
                    # it may have ended elsewhere while its end was read here, not reported
                    row = self.store.get(child.id)
                    if row is not None and Status(row.status).is_terminal:
                        child = self.reads.run_of(row)
                outcome = yield from self._outcome(run, t, step.child, child, ctx, decision)
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        done = self.drive.transitions.persist(run, nxt, started)
        if isinstance(outcome, ChildWaiting) and isinstance(done.decision, Wait):
            # the child may have ended since it was read, in an engine that started it
            # inline for a holder that lost the run and so told no parent: look once the
            # wait is written (the child's end looks at the parent once it is written, so
            # one of the two sees the other); the end, in the inbox, is taken once this
            # engine lets the run go (``Inbox.after_release``), or by a worker
            row = self.store.get(outcome.child_id)
            if row is not None and Status(row.status).is_terminal:
                self._tell(run.id, t.name, row.id, run.correlation_id)
        return done

    def _outcome(
        self,
        run: HeldRun,
        t: TransitionDef,
        child: ChildDef,
        child_run: Run,
        ctx: StepContext[Any, Any],
        decision: RunStep,
    ) -> Generator[Request, Any, Outcome | ChildOutcome]:
        """The step's outcome from its child: taken, failed, or still waiting for it."""
        status = child_run.status
        if status is Status.COMPLETED:
            response = Response(None)
            read = child.output
            if read is not None:
                output = child_run.output
                response = yield Call(lambda c: read(c, output), ctx, None)
            return self.drive._step_outcome(run, t, response, decision.completes)
        if status.is_terminal:
            error = child_run.error
            why = "" if error is None else f": {error.message}"
            return StepFailed(
                ErrorInfo(
                    "ChildSagaFailed",
                    f"child run {child_run.id} of saga {child_run.saga!r} ended {status}{why}",
                    retryable=False,
                    kind=ErrorKind.STEP_ERROR,
                    details={
                        "child_id": child_run.id,
                        "status": status.value,
                        "error": None if error is None else error.type,
                    },
                )
            )
        return ChildWaiting(child_run.id)

    # -- undoing it ------------------------------------------------------------------------

    def run_undo(self, run: HeldRun, decision: RunCompensation) -> Generator[Request, Any, Next]:
        """Compensate a completed child, cancel an open one, retry one whose compensation
        failed; nothing if none was started."""
        t = run.definition.transitions[decision.transition]
        assert t.step is not None
        assert t.step.child is not None
        started = self.clock()
        key = child_key(decision.idempotency_key)
        row = self.store.find(t.step.child.definition.name, idempotency_key=key)
        outcome: Outcome
        if row is None:
            outcome = CompensationSucceeded()  # the child never started: nothing to undo
        else:
            details = {"parent_id": run.id}
            reason = f"its parent {run.id} compensates"
            status = Status(row.status)
            result: Run | None = None
            try:
                if status is Status.FAILED and row.machine.get("stack"):
                    # its compensation kept failing: undoing the parent tries it again
                    result = yield from self.operate(row.id, RetryRequested(), 0.0, "retry")
                elif status in _UNDOABLE:
                    result = yield from self._undo_child(row.id, status, key, reason, details)
                else:
                    result = self.reads.run_of(row)
            except StateSagaError as error:
                retryable = isinstance(error, EntityBusy | FencedOut)
                outcome = CompensationFailed(capture(error, retryable=retryable))
            if result is not None:
                outcome = _undone(result)
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        return self.drive.transitions.persist(run, nxt, started)

    # -- a child's end, told to its parent ---------------------------------------------------

    def ended(self, run: HeldRun, result: Run) -> Generator[Request, Any, None]:
        """``run`` (a child) has ended: wake its parent if the parent still waits for it."""
        parent = parent_of(run.idempotency_key)
        if parent is None:
            return
        parent_id, step = parent
        row = self.store.get(parent_id)
        if (
            row is not None
            and row.status == Status.COMPENSATED.value
            and result.status is Status.COMPLETED
        ):
            # started by a holder that had lost its parent, which then compensated without
            # counting it: undo it (the parent's end looks at its children too, once written)
            yield from self._undo_orphan(result.id, Status.COMPLETED, run.idempotency_key, row.id)
            return
        if (
            row is None
            or row.machine.get("pending") != step
            or row.status not in (Status.WAITING.value, Status.RUNNING.value)
        ):
            return  # the parent moved on (or compensates): nothing waits for this end
        if run.idempotency_key in self.inline and row.status == Status.RUNNING.value:
            # started inline by the parent's step: its holder reads this end itself (a
            # holder that lost the run meanwhile leaves a wait whose writer looks again)
            return
        if self._tell(parent_id, step, result.id, row.correlation_id):
            # the parent takes it now if it is free; else its holder, or a worker
            yield from self.inbox.consume(parent_id, 0.0)

    def orphans(self, run: HeldRun) -> Generator[Request, Any, None]:
        """``run`` ended compensated: undo a child of its it never counted.

        A holder that lost the run can still run a child step it had begun, and start
        the child after the engine that took the run over compensated it without that
        step; the child's end looks at the parent too, so whichever ends last sees the
        other.
        """
        if not children_of(run.definition):
            return
        for row in self.reads.child_rows(run.id, run.correlation_id):
            yield from self._undo_orphan(row.id, Status(row.status), row.idempotency_key, run.id)

    def _undo_orphan(
        self, child_id: str, status: Status, key: str | None, parent_id: str
    ) -> Generator[Request, Any, None]:
        """Compensate a completed child of a compensated parent, or cancel an open one."""
        if status not in _UNDOABLE:
            return
        reason = f"its parent {parent_id} was compensated without it"
        try:
            yield from self._undo_child(child_id, status, key, reason, {"parent_id": parent_id})
        except StateSagaError as error:  # another engine undoes it, or it moved on
            log.info("child %s of %s left as it is: %s", child_id, parent_id, error)

    def _undo_child(
        self, child_id: str, status: Status, key: str | None, reason: str, details: dict[str, Any]
    ) -> Generator[Request, Any, Run | None]:
        """Compensate a completed child, or cancel an open one (``status`` in ``_UNDOABLE``).

        A cancel has the event id of the parent's undo of the step: one cancel however
        often it is asked for.
        """
        if status is Status.COMPLETED:
            request = CompensateRequested(reason, details)
            compensated: Run = yield from self.operate(child_id, request, 0.0, "compensate")
            return compensated
        delivery: Delivery = yield from self.inbox.cancel(
            child_id, reason, details, f"parent-compensates:{key}", 0.0
        )
        return delivery.run

    def _tell(self, parent_id: str, step: str, child_id: str, correlation_id: str) -> bool:
        """Record a child's end in its parent's inbox; ``False`` if it was already there."""
        _, duplicate = self.store.receive(
            InboxRow(
                instance_id=parent_id,
                event_id=child_event_id(child_id),
                kind="event",
                event=child_event(step),
                payload=None,
                status=DeliveryStatus.PENDING.value,
                reason=None,
                correlation_id=correlation_id,
                received_at=self.clock(),
            )
        )
        return not duplicate

    def _context(self, run: HeldRun, name: str, attempt: int, key: str) -> StepContext[Any, Any]:
        return StepContext(
            input=run.input,
            data=run.snapshot.data,
            instance_id=run.id,
            saga=run.definition.name,
            step=name,
            attempt=attempt,
            idempotency_key=key,
            correlation_id=run.correlation_id,
            resources=self.resources,
        )


#: the children an undo compensates (completed) or cancels (still open)
_UNDOABLE = (Status.COMPLETED, Status.RUNNING, Status.WAITING)


def _undone(child: Run) -> Outcome:
    """The undo's outcome from what became of the child."""
    if child.status is Status.COMPENSATED:
        return CompensationSucceeded()
    if child.status is Status.FAILED:
        return CompensationFailed(
            ErrorInfo(
                "ChildSagaFailed",
                f"child run {child.id} of saga {child.saga!r} failed while compensating; "
                "repair it (statesaga show/retry/resolve), then retry this run",
                retryable=False,
                details={"child_id": child.id},
            )
        )
    return CompensationFailed(
        ErrorInfo(
            "ChildSagaBusy",
            f"child run {child.id} of saga {child.saga!r} is {child.status}; its compensation "
            "is tried again",
            retryable=True,
            details={"child_id": child.id},
        )
    )
