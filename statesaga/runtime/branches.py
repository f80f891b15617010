"""Driving a fork: the branch steps the core starts run concurrently (``Gather``).

The core decides which branch steps start (:class:`~statesaga.core.RunBranches`);
this starts them through the engine and, as each one ends, reports it to the
core and persists the transition that follows, one write at a time through
the held run (so locks and fencing work as for any step). It returns once the
core leaves the fork (joined, or stopping with nothing left running), or asks
for a sleep (a branch waiting for its retry, nothing running).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from statesaga.context import StepContext
from statesaga.core import (
    BranchFailed,
    BranchSucceeded,
    Next,
    Outcome,
    RunBranches,
    StepFailed,
)
from statesaga.definition import TransitionDef
from statesaga.runtime.held import HeldRun
from statesaga.runtime.reporting import Reporter
from statesaga.runtime.requests import Call, Gather, Request, Response
from statesaga.runtime.transitions import Transitions

__all__ = ["BranchDriver"]

#: what a branch step's answer becomes: the step's outcome as an ordinary step's
Judge = Callable[[HeldRun, TransitionDef, Response, bool], Outcome]
Context = Callable[..., StepContext[Any, Any]]


class BranchDriver:
    """Runs the branch steps of a fork until the core leaves it (or sleeps)."""

    def __init__(
        self,
        transitions: Transitions,
        reporter: Reporter,
        clock: Callable[[], float],
        context: Context,
        judge: Judge,
    ) -> None:
        self.transitions = transitions
        self.reporter = reporter
        self.clock = clock
        self.context = context
        self.judge = judge

    def run(self, run: HeldRun, decision: RunBranches) -> Generator[Request, Any, Next]:
        """Drive the fork from ``decision``; what the core decided once it stops forking."""
        running: dict[str, tuple[StepContext[Any, Any], float]] = {}
        nxt = Next(run.snapshot, decision)
        while isinstance(nxt.decision, RunBranches):
            d = nxt.decision
            calls = []
            for step in d.start:
                t = run.definition.step_of(step.transition)
                assert t.step is not None
                ctx = self.context(run, t.name, step.attempt, step.idempotency_key)
                calls.append((t.name, Call(t.step.function, ctx, t.step.timeout)))
                running[t.name] = (ctx, self.clock())
            assert running, "the core asked to wait on a fork with no branch step running"
            wait = None if d.until is None else max(0.0, d.until - self.clock())
            answer = yield Gather(tuple(calls), wait)
            if answer is None:  # a branch's retry is due: let the core start it
                assert d.until is not None
                now = max(self.clock(), d.until)
                nxt = self.transitions.persist(run, run.core.decide(run.snapshot, now), now)
                continue
            name, response = answer
            ctx, started = running.pop(name)
            outcome = self._outcome(run, name, ctx, response)
            error = outcome.error if isinstance(outcome, BranchFailed) else None
            if error is not None:
                self.reporter.step_failed(run, name, ctx.attempt, error.message)
            nxt = run.core.next(run.snapshot, outcome, self.clock())
            nxt = self.transitions.persist(run, nxt, started)
            if self.reporter.observer is not None:
                self.reporter.step_finished(run, name, ctx.attempt, started, error, undo=False)
        return nxt

    def _outcome(
        self, run: HeldRun, name: str, ctx: StepContext[Any, Any], response: Response
    ) -> BranchSucceeded | BranchFailed:
        t = run.definition.step_of(name)
        if response.error is None and response.value is None:
            return BranchSucceeded(name, None, ctx.data)
        judged = self.judge(run, t, response, False)
        if isinstance(judged, StepFailed):
            return BranchFailed(name, judged.error)
        data = getattr(judged, "data", None)
        return BranchSucceeded(name, data, ctx.data)
