"""The rules of parallel branches: which branch steps run, joining, failing and draining.

A run reaching a parallel transition begins a fork (:class:`Forking` in its
snapshot) and stays in the transition's source state while the branches run.
Every branch step that finishes is a transition of its own (a ``forward``
record named ``"<transition>.<branch>"``); a compensatable one goes on the
compensation stack as it completes, so compensating undoes the latest first,
each branch in reverse. When every branch is done the transition is taken
(the join). When a branch fails for good (or the deadline passes, or the run
is cancelled) no new branch step starts; once the running ones have reported,
the run stops as :meth:`Rules.stop <statesaga.core._rules.Rules.stop>` says.

>>> import attrs
>>> from statesaga import Branch, Saga, State
>>> from statesaga.core import Interpreter, RunBranches
>>> @attrs.define
... class Data:
...     a: int = 0
...     b: int = 0
>>> def step_a(ctx):
...     return attrs.evolve(ctx.data, a=1)
>>> def step_b(ctx):
...     return attrs.evolve(ctx.data, b=2)
>>> class Both(Saga[Data, Data]):
...     name = "both"
...     new = State(initial=True)
...     done = State(final=True)
...     both = new.to(done).parallel(a=Branch(step_a, read_only=True, writes="a"),
...                                  b=Branch(step_b, read_only=True, writes="b"))
>>> core = Interpreter(Both.definition)
>>> first = core.start("i-1", Data(), Data(), now=0.0)
>>> [(s.transition, s.idempotency_key) for s in first.decision.start]
[('both.a', 'i-1:0:both.a'), ('both.b', 'i-1:0:both.b')]
>>> one = core.next(first.snapshot, BranchSucceeded("both.b", Data(b=2), Data()), now=1.0)
>>> one.snapshot.data, one.snapshot.status.value, one.decision.start
(Data(a=0, b=2), 'running', ())
>>> two = core.next(one.snapshot, BranchSucceeded("both.a", Data(a=1), Data()), now=2.0)
>>> two.snapshot.data, two.snapshot.state, [r.transition for r in two.records]
(Data(a=1, b=2), 'done', ['both.a', 'both'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from statesaga.core._parallel_types import (
    BranchFailed,
    BranchProgress,
    BranchSucceeded,
    Forking,
    RunBranches,
)
from statesaga.core._rules import Rules
from statesaga.core._types import (
    Decision,
    Done,
    ErrorInfo,
    HistoryKind,
    Next,
    Record,
    RunStep,
    Sleep,
    Snapshot,
    idempotency_key,
)
from statesaga.definition import TransitionDef
from statesaga.errors import InvalidOperation
from statesaga.parallel import BranchDef, ParallelDef

if TYPE_CHECKING:
    from statesaga.core._forward import Forward

__all__ = ["Parallel"]


class Parallel:
    """The parallel-branch rules of one definition (see :mod:`statesaga.core._parallel`)."""

    def __init__(self, rules: Rules, forward: Forward) -> None:
        self.rules = rules
        self.forward = forward
        self.definition = rules.definition
        self.forks: dict[str, ParallelDef] = {
            t.name: t.parallel for t in self.definition.transitions.values() if t.parallel
        }
        # branch step -> (its fork, branch index, step index)
        self.positions: dict[str, tuple[str, int, int]] = {
            step.name: (fork, b, s)
            for fork, spec in self.forks.items()
            for b, s, step in spec.positions()
        }

    def begin(self, snapshot: Snapshot, t: TransitionDef) -> Snapshot:
        """``snapshot`` starting the branches of parallel transition ``t`` (pending)."""
        assert t.parallel is not None
        progress = tuple(BranchProgress() for _ in t.parallel.branches)
        return attrs.evolve(snapshot, forking=Forking(t.name, snapshot.seq, progress))

    def settle(
        self, snapshot: Snapshot, now: float, records: list[Record]
    ) -> tuple[Snapshot, Decision | None]:
        """What a fork calls for: branch steps to start, a sleep, the join, or stopping.

        A ``None`` decision: the run left the fork (joined, or stopped); settle on.
        """
        forking = snapshot.forking
        assert forking is not None
        spec = self.forks[forking.transition]
        if forking.error is not None:
            if forking.in_flight:  # the running steps report before anything is undone
                return snapshot, RunBranches(forking.transition, ())
            snapshot = self._unknown_effects(snapshot, forking, spec)
            return self.rules.stop(snapshot, forking.error, None, records), None
        progress = forking.branches
        if all(p.done == len(b.steps) for p, b in zip(progress, spec.branches, strict=True)):
            t = self.definition.transitions[forking.transition]
            joined, record = self.forward.advance(
                snapshot, t, snapshot.data, now, HistoryKind.FORWARD
            )
            records.append(record)
            return joined, None
        running = sum(p.running for p in progress)
        room = len(progress) if spec.max_concurrency is None else spec.max_concurrency - running
        start: list[int] = []
        later: list[float] = []
        for index, (p, branch) in enumerate(zip(progress, spec.branches, strict=True)):
            if p.running or p.done == len(branch.steps):
                continue
            if p.wake_at is not None and p.wake_at > now:
                later.append(p.wake_at)
            elif len(start) < room:
                start.append(index)
        if not start and not running:
            assert later, "a fork with nothing to run, nothing running and nothing due"
            return attrs.evolve(snapshot, wake_at=min(later)), Sleep(min(later))
        for index in start:
            forking = forking.with_branch(
                index, attrs.evolve(progress[index], running=True, wake_at=None)
            )
        steps = tuple(self._run_step(snapshot, forking, spec.branches[i], i) for i in start)
        until = min(later) if later else None
        decision = RunBranches(forking.transition, steps, until)
        return attrs.evolve(snapshot, forking=forking, wake_at=None), decision

    def _unknown_effects(self, snapshot: Snapshot, forking: Forking, spec: ParallelDef) -> Snapshot:
        """The stopping fork's unfinished branch steps that undo on failure, on the stack.

        Which branch steps were running is kept in memory only: a step whose
        call took effect just before a crash leaves no trace. As for an
        ordinary pending step, the compensation of each unfinished branch step
        declared ``undo_on_failure`` (it tolerates an effect that never
        happened) runs too, under its idempotency key.
        """
        stack = snapshot.stack
        for p, branch in zip(forking.branches, spec.branches, strict=True):
            if p.failed or p.done >= len(branch.steps):
                continue
            t = branch.steps[p.done]
            done = Done(t.name, forking.seq)
            if t.step is not None and t.step.compensate_on_failure and done not in stack:
                stack = (*stack, done)
        return attrs.evolve(snapshot, stack=stack)

    def _run_step(
        self, snapshot: Snapshot, forking: Forking, branch: BranchDef, index: int
    ) -> RunStep:
        p = forking.branches[index]
        t = branch.steps[p.done]
        assert t.step is not None
        key = idempotency_key(snapshot.instance_id, forking.seq, t.name)
        return RunStep(t.name, p.attempt, key, t.step.timeout)

    def _running(self, snapshot: Snapshot, step: str) -> tuple[Forking, BranchDef, int, int]:
        """The fork, branch, branch index and step index a branch step reports on."""
        forking = snapshot.forking
        where = self.positions.get(step)
        if forking is None or where is None or where[0] != forking.transition:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not running branch step {step!r}",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        _, b, s = where
        p = forking.branches[b]
        if not p.running or p.done != s:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} is not running branch step {step!r} now",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        return forking, self.forks[forking.transition].branches[b], b, s

    def succeeded(self, snapshot: Snapshot, outcome: BranchSucceeded, now: float) -> Next:
        """A branch step returned: keep its branch's fields and record its transition."""
        forking, branch, b, s = self._running(snapshot, outcome.step)
        data = snapshot.data
        if outcome.data is not None:
            problem = _foreign_change(branch, outcome.data, outcome.given)
            if problem is not None:
                error = ErrorInfo("TypeError", problem, retryable=False)
                return self.failed(snapshot, BranchFailed(outcome.step, error), now)
            if branch.writes:
                data = attrs.evolve(data, **{f: getattr(outcome.data, f) for f in branch.writes})
        t = branch.steps[s]
        assert t.step is not None
        p = forking.branches[b]
        stack = snapshot.stack
        if t.step.compensation is not None:
            stack = (*stack, Done(t.name, forking.seq))
        forking = forking.with_branch(b, BranchProgress(done=s + 1))
        record = Record(HistoryKind.FORWARD, t.source, t.source, t.name, p.attempt)
        moved = attrs.evolve(
            snapshot, data=data, stack=stack, seq=snapshot.seq + 1, forking=forking
        )
        return self.forward.settle(moved, now, [record])

    def failed(self, snapshot: Snapshot, outcome: BranchFailed, now: float) -> Next:
        """A branch step raised: retry it (its own policy), or stop the fork, draining it."""
        forking, branch, b, s = self._running(snapshot, outcome.step)
        t = branch.steps[s]
        assert t.step is not None
        p = forking.branches[b]
        error = attrs.evolve(outcome.error, step=t.name)
        policy = t.step.retry
        if forking.error is None and error.retryable and not policy.exhausted(p.attempt):
            delay = policy.delay(p.attempt, self.rules.rand())
            retried = BranchProgress(s, p.attempt + 1, now + delay)
            record = Record(HistoryKind.RETRY, t.source, t.source, t.name, p.attempt, error)
            moved = attrs.evolve(snapshot, forking=forking.with_branch(b, retried))
            return self.forward.settle(moved, now, [record])
        record = Record(HistoryKind.FAILURE, t.source, t.source, t.name, p.attempt, error)
        stack = snapshot.stack
        if t.step.compensate_on_failure:
            # its effect is unknown: its compensation (which tolerates an effect that never
            # happened) runs too, as for an ordinary step
            stack = (*stack, Done(t.name, forking.seq))
        forking = forking.with_branch(b, BranchProgress(s, p.attempt, failed=True))
        if forking.error is None:
            forking = attrs.evolve(forking, error=error)
        moved = attrs.evolve(snapshot, stack=stack, error=forking.error, forking=forking)
        return self.forward.settle(moved, now, [record])


def _foreign_change(branch: BranchDef, data: Any, given: Any) -> str | None:
    """Why a branch step's returned context may not be merged (``None``: it may)."""
    if given is None or not attrs.has(type(data)) or type(data) is not type(given):
        return None
    owned = set(branch.writes)
    changed = [
        f.name
        for f in attrs.fields(type(data))
        if f.name not in owned and getattr(data, f.name) != getattr(given, f.name)
    ]
    if not changed:
        return None
    fields = ", ".join(repr(name) for name in changed)
    owns = ", ".join(repr(name) for name in branch.writes) or "none"
    return (
        f"branch {branch.name!r} changed the context field(s) {fields}, which it does not own "
        f"(it owns {owns}); branches run concurrently, so each may change only the fields "
        "declared in Branch(writes=...)"
    )
