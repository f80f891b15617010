"""The drive loop over a held run: steps, compensations, guards and short sleeps.

Written once as generators shared by both engines: a step is a ``Call`` the
engine answers, a short retry delay a ``Pause``. Every transition is
persisted before the next action starts. A transactional step runs inside
the transaction that records its transition (retried once on a fresh
connection if the connection dies under it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs

from statesaga.context import Resources, StepContext
from statesaga.core import (
    BranchChosen,
    ChooseBranch,
    CompensationFailed,
    CompensationSucceeded,
    ErrorInfo,
    EventJudged,
    Finish,
    JudgeEvent,
    MeasureTimeout,
    Next,
    Outcome,
    RunBranches,
    RunCompensation,
    RunStep,
    Sleep,
    Status,
    StepFailed,
    StepSucceeded,
    TimeoutMeasured,
    idempotency_key,
    undo_name,
)
from statesaga.definition import TransitionDef
from statesaga.errors import ConnectionLost
from statesaga.failures import capture
from statesaga.run import Run
from statesaga.runtime.branches import BranchDriver
from statesaga.runtime.codec import result_of
from statesaga.runtime.held import HeldRun, Kept
from statesaga.runtime.intake import apply_judgment
from statesaga.runtime.leases import LeaseKeeper
from statesaga.runtime.limits import PayloadLimit
from statesaga.runtime.reporting import Reporter, notify
from statesaga.runtime.requests import Call, Driver, Pause, Request, Response, Transact
from statesaga.runtime.transitions import Transitions
from statesaga.serde import converter

if TYPE_CHECKING:
    from statesaga.observability import StepTrace

__all__ = ["Drive"]

#: an attempt of a step or compensation: what to do next, and the attempt's error if it failed
Attempt: TypeAlias = Generator[Request, Any, tuple[Next, ErrorInfo | None]]


class _Discard(Exception):
    """Roll back a transactional step's transaction and report ``outcome`` instead."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class ChildSteps(Protocol):
    """What runs child steps (``runtime.children``, which sits above the drive loop)."""

    def run_step(self, run: HeldRun, decision: RunStep) -> Generator[Request, Any, Next]: ...

    def run_undo(
        self, run: HeldRun, decision: RunCompensation
    ) -> Generator[Request, Any, Next]: ...

    def ended(self, run: HeldRun, result: Run) -> Generator[Request, Any, None]: ...

    def orphans(self, run: HeldRun) -> Generator[Request, Any, None]: ...


class Drive:
    """Drives held runs until they wait, end, or sleep past ``max_inline_sleep``."""

    #: runs child steps and tells parents of their children's end (set by the runtime)
    children: ChildSteps | None = None

    def __init__(
        self,
        transitions: Transitions,
        keeper: LeaseKeeper,
        reporter: Reporter,
        resources: Resources,
        clock: Callable[[], float],
        max_inline_sleep: float,
        limit: PayloadLimit | None = None,
    ) -> None:
        self.limit = PayloadLimit() if limit is None else limit
        self.transitions = transitions
        self.keeper = keeper
        self.reporter = reporter
        self.resources = resources
        self.clock = clock
        self.max_inline_sleep = max_inline_sleep
        self.branches = BranchDriver(
            transitions, reporter, clock, self._context, self._step_outcome
        )

    def hold(
        self, run: HeldRun, nxt: Next, *, started: float | None = None, operation: str = "resume"
    ) -> Driver:
        """Drive ``run`` from ``nxt`` while the keeper renews its leases.

        With ``started``, ``nxt`` is not yet persisted (it is written first).
        ``operation`` names the engine call that drives it, for its trace.
        """
        reporter = self.reporter
        if reporter.observer is not None:
            reporter.trace(run, operation)
        self.keeper.track(run)
        try:
            result = yield from self._drive(run, nxt, started)
        except BaseException as error:
            reporter.end_trace(run, error)
            raise
        finally:
            self.keeper.untrack(run)
        reporter.end_trace(run, None)
        children = self.children
        if result.is_terminal and children is not None:
            if run.idempotency_key is not None:
                yield from children.ended(run, result)  # a child's parent may wait for it
            if result.status is Status.COMPENSATED:
                yield from children.orphans(run)  # a child it never counted is undone
        return result

    def _drive(
        self, run: HeldRun, nxt: Next, started: float | None
    ) -> Generator[Request, Any, Run]:
        persist = self.transitions.persist
        if started is not None:
            nxt = persist(run, nxt, started)
        else:
            run.snapshot = nxt.snapshot
        while True:
            decision = nxt.decision
            if isinstance(decision, RunStep):
                nxt = yield from self._run_step(run, decision)
            elif isinstance(decision, RunCompensation):
                nxt = yield from self._run_compensation(run, decision)
            elif isinstance(decision, ChooseBranch):
                nxt = yield from self._choose(run, decision)
            elif isinstance(decision, JudgeEvent):
                nxt = yield from self._judge(run, decision)
            elif isinstance(decision, MeasureTimeout):
                nxt = yield from self._measure(run, decision)
            elif isinstance(decision, RunBranches):
                nxt = yield from self.branches.run(run, decision)
            elif isinstance(decision, Sleep):
                delay = decision.until - self.clock()
                if delay > self.max_inline_sleep:
                    break
                if delay > 0:
                    yield Pause(delay)
                # the delay has been slept: decide as of its end even if the clock (a test's
                # fake one) has not moved, so that a retry is never put off for ever
                now = max(self.clock(), decision.until)
                # a cancel sent during the backoff is taken before the next try
                taken = self.transitions.take_inbox(run, now, resumed=False)
                nxt = taken or persist(run, run.core.decide(run.snapshot, now), now)
            else:
                break
        if run.leased:  # claimed, but nothing was persisted that let the lease go
            self.transitions.release(run)
        return result_of(run)

    def _context(
        self, run: HeldRun, name: str, attempt: int, key: str, **event: Any
    ) -> StepContext[Any, Any]:
        return StepContext(
            input=run.input,
            data=run.snapshot.data,
            instance_id=run.id,
            saga=run.definition.name,
            step=name,
            attempt=attempt,
            idempotency_key=key,
            correlation_id=run.correlation_id,
            event=event.get("event", run.snapshot.event),
            resources=self.resources,
        )

    def _run_step(self, run: HeldRun, decision: RunStep) -> Generator[Request, Any, Next]:
        t = run.definition.transitions[decision.transition]
        step = t.step
        assert step is not None
        if step.child is not None and self.children is not None:
            return (yield from self.children.run_step(run, decision))
        ctx = self._context(run, t.name, decision.attempt, decision.idempotency_key)
        call = Call(step.function, ctx, step.timeout)
        if run.trace is None:
            nxt, _ = yield from self._step(run, t, call, decision.completes)
            return nxt
        traced = self.reporter.step_trace(run, t.name, decision.attempt, undo=False)
        attempt = self._step(run, t, _scoped(call, traced), decision.completes)
        return (yield from self._under(traced, attempt))

    def _under(self, traced: StepTrace | None, attempt: Attempt) -> Generator[Request, Any, Next]:
        """Drive a step's ``attempt``, then end its trace with the attempt's outcome."""
        try:
            nxt, error = yield from attempt
        except BaseException as raised:
            if traced is not None:
                notify(traced.end, error=capture(raised, retryable=False))
            raise
        if traced is not None:
            notify(traced.end, error=error)
        return nxt

    def _step(self, run: HeldRun, t: TransitionDef, call: Call, completes: bool) -> Attempt:
        step = t.step
        assert step is not None
        ctx = call.ctx
        started = self.clock()
        run.step_deadline = None if step.timeout is None else started + step.timeout
        try:
            if step.transactional:
                done = yield from self._in_transaction(
                    run,
                    call,
                    lambda response: self._step_outcome(run, t, response, completes),
                    started,
                    undo=False,
                )
                if isinstance(done, Next):
                    return done, None
                outcome = done
            else:
                outcome = self._step_outcome(run, t, (yield call), completes)
        finally:
            run.step_deadline = None
        error = outcome.error if isinstance(outcome, StepFailed) else None
        if error is not None:
            self.reporter.step_failed(run, t.name, ctx.attempt, error.message)
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        nxt = self.transitions.persist(run, nxt, started)
        if self.reporter.observer is not None:
            self.reporter.step_finished(run, t.name, ctx.attempt, started, error, undo=False)
        return nxt, error

    def _in_transaction(
        self,
        run: HeldRun,
        call: Call,
        judge: Callable[[Response], Outcome],
        started: float,
        *,
        undo: bool,
    ) -> Generator[Request, Any, Next | Outcome]:
        """Call a step (or undo) inside the transaction that records its transition.

        Returns the committed ``Next`` when it succeeded, or its failure (the
        transaction rolled back, the step's writes with it) for the caller to record.
        The engine runs the transaction where its waits hold up no other run.
        """
        done: Next | Outcome = yield Transact(
            lambda answer: self._transact(run, call, judge, started, answer, undo=undo)
        )
        return done

    def _transact(
        self,
        run: HeldRun,
        call: Call,
        judge: Callable[[Response], Outcome],
        started: float,
        answer: Callable[[Call], Response],
        *,
        undo: bool,
    ) -> Next | Outcome:
        """The transaction of ``_in_transaction``: a plain function, run by the engine."""
        ctx = call.ctx
        store = self.transitions.store
        before = Kept.of(run)
        for attempt in (1, 2):
            try:
                with store.transaction() as connection:
                    in_it = attrs.evolve(ctx, connection=connection)
                    response = answer(attrs.evolve(call, ctx=in_it))
                    outcome = judge(response)
                    if isinstance(outcome, StepFailed | CompensationFailed):
                        raise _Discard(outcome)
                    nxt = run.core.next(run.snapshot, outcome, self.clock())
                    nxt = self.transitions.persist(run, nxt, started, connection=connection)
                break
            except _Discard as discard:
                return discard.outcome
            except ConnectionLost:
                # the database connection died: the transaction rolled back (the step's
                # writes with it), or it committed and only the answer was lost
                row = store.get(run.id)
                if row is not None and (row.version, row.epoch) == (before.version + 1, run.epoch):
                    break  # it committed
                before.restore(run)
                if attempt == 2:
                    raise
                self.reporter.connection_lost(run, ctx.step)
        if before.unsaved is not None and run.unsaved is None:
            self.reporter.started(run)  # the run was inserted in this transaction
        if isinstance(nxt.decision, Finish):
            self.reporter.finished(run, run.updated_at)
        self.reporter.step_finished(run, ctx.step, ctx.attempt, started, None, undo=undo)
        return nxt

    def _step_outcome(
        self, run: HeldRun, t: TransitionDef, response: Response, completes: bool
    ) -> Outcome:
        assert t.step is not None
        if response.error is not None:
            return StepFailed(
                capture(response.error, retryable=t.step.retry.is_retryable(response.error))
            )
        data = response.value
        definition = run.definition
        if data is None:
            data = run.snapshot.data
        elif not isinstance(data, definition.context_type):
            return StepFailed(
                ErrorInfo(
                    "TypeError",
                    f"step {t.name!r} returned {type(data).__name__}; return the saga's "
                    f"context ({definition.context_type.__name__}) or None",
                    retryable=False,
                )
            )
        try:
            if data is not run.encoded_data:
                # encoded here, not when written, so a context over the limit fails the step
                encoded = self.limit.encoded(
                    converter.unstructure(data, definition.context_type),
                    "context",
                    saga=definition.name,
                    instance_id=run.id,
                    state=run.snapshot.state,
                )
                run.encoded_context, run.encoded_data = encoded, data
            if completes and definition.output is not None:
                run.output = definition.output(run.input, data)
                self.limit.encoded(
                    converter.unstructure(run.output, definition.output_type or type(run.output)),
                    "output",
                    saga=definition.name,
                    instance_id=run.id,
                )
        except Exception as error:
            return StepFailed(capture(error, retryable=False))
        return StepSucceeded(data)

    def _run_compensation(
        self, run: HeldRun, decision: RunCompensation
    ) -> Generator[Request, Any, Next]:
        t = run.definition.step_of(decision.transition)  # (a branch step's too)
        assert t.step is not None
        if t.step.child is not None and self.children is not None:
            return (yield from self.children.run_undo(run, decision))
        compensation = t.step.rollback  # its compensation, or a pivot's void
        assert compensation is not None
        ctx = self._context(run, undo_name(t.name), decision.attempt, decision.idempotency_key)
        call = Call(compensation, ctx, t.step.timeout)
        if run.trace is None:
            nxt, _ = yield from self._compensate(run, t, call)
            return nxt
        traced = self.reporter.step_trace(run, ctx.step, decision.attempt, undo=True)
        return (yield from self._under(traced, self._compensate(run, t, _scoped(call, traced))))

    def _compensate(self, run: HeldRun, t: TransitionDef, call: Call) -> Attempt:
        assert t.step is not None
        ctx = call.ctx
        started = self.clock()
        if t.step.transactional:
            # the undo of a transactional step writes through the compensating
            # transition's own transaction: undone exactly once, or not at all
            done = yield from self._in_transaction(
                run,
                call,
                lambda response: self._compensation_outcome(run, t, ctx, response),
                started,
                undo=True,
            )
            if isinstance(done, Next):
                return done, None
            outcome = done
        else:
            outcome = self._compensation_outcome(run, t, ctx, (yield call))
        error = outcome.error if isinstance(outcome, CompensationFailed) else None
        nxt = run.core.next(run.snapshot, outcome, self.clock())
        nxt = self.transitions.persist(run, nxt, started)
        if self.reporter.observer is not None:
            self.reporter.step_finished(run, ctx.step, ctx.attempt, started, error, undo=True)
        return nxt, error

    def _compensation_outcome(
        self, run: HeldRun, t: TransitionDef, ctx: StepContext[Any, Any], response: Response
    ) -> Outcome:
        assert t.step is not None
        if response.error is None:
            value = response.value
            returned = value if isinstance(value, run.definition.context_type) else None
            self.reporter.compensated(run, ctx.step, ctx.attempt)
            return CompensationSucceeded(returned)
        retryable = t.step.compensation_retry.is_retryable(response.error)
        self.reporter.compensation_failed(run, ctx.step, ctx.attempt, response.error)
        return CompensationFailed(capture(response.error, retryable=retryable))

    def _ask_guards(
        self, run: HeldRun, names: tuple[str, ...], **event: Any
    ) -> Generator[Request, Any, tuple[str | None, ErrorInfo | None]]:
        """Ask the guards of ``names`` in order: the first that passes (an unguarded
        transition passes), or the one whose guard raised with its error; ``None`` if none.

        ``event=`` is the payload the guards see as ``ctx.event`` (an event's guards)."""
        for name in names:
            guard = run.definition.transitions[name].guard
            if guard is None:
                return name, None
            key = idempotency_key(run.id, run.snapshot.seq, name, "guard")
            ctx = self._context(run, name, 1, key, **event)
            response = yield Call(guard, ctx, None)
            if response.error is not None:
                return name, capture(response.error, retryable=False)
            if run.core.guard_passes(name, response.value):
                return name, None
        return None, None

    def _choose(self, run: HeldRun, decision: ChooseBranch) -> Generator[Request, Any, Next]:
        started = self.clock()
        chosen, error = yield from self._ask_guards(run, decision.transitions)
        if chosen is not None and error is not None:
            nxt = run.core.guard_raised(run.snapshot, chosen, error, self.clock())
        else:
            nxt = run.core.next(run.snapshot, BranchChosen(chosen), self.clock())
        return self.transitions.persist(run, nxt, started)

    def _judge(self, run: HeldRun, decision: JudgeEvent) -> Generator[Request, Any, Next]:
        """Ask the guards of an event's transitions, in order; the first that passes wins."""
        started = self.clock()
        chosen, error = yield from self._ask_guards(
            run, decision.transitions, event=decision.payload
        )
        judged = EventJudged(decision.event, decision.payload, decision.received_at, chosen, error)
        nxt, settle = apply_judgment(run, judged, self.clock(), self.reporter)
        return self.transitions.persist(run, nxt, started, settle=[settle])

    def _measure(self, run: HeldRun, decision: MeasureTimeout) -> Generator[Request, Any, Next]:
        """Call a waiting state's timeout function; the core turns its answer into the wait."""
        started = self.clock()
        timeout_of = run.definition.states[decision.state].timeout_of
        assert timeout_of is not None
        name = f"{decision.state}.timeout"
        ctx = self._context(run, name, 1, idempotency_key(run.id, run.snapshot.seq, name))
        response = yield Call(timeout_of, ctx, None)
        if response.error is not None:
            measured = TimeoutMeasured(error=capture(response.error, retryable=False))
        else:
            measured = TimeoutMeasured(response.value)
        nxt = run.core.next(run.snapshot, measured, self.clock())
        return self.transitions.persist(run, nxt, started)


def _scoped(call: Call, traced: StepTrace | None) -> Call:
    """``call`` made with ``traced``'s span current around it."""
    return call if traced is None else attrs.evolve(call, scope=traced.activate)
