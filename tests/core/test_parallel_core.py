"""The core's fork rules, without I/O: which branch steps start, the bound, draining a
failing fork, the deadline mid-fork, a foreign write, a fork past the pivot."""

from __future__ import annotations

import attrs

from statesaga import Branch, Retry, Saga, State, StepContext
from statesaga.core import (
    BranchFailed,
    BranchSucceeded,
    CancelRequested,
    ErrorInfo,
    Interpreter,
    RetryRequested,
    RunBranches,
    RunCompensation,
    Sleep,
    Status,
    StepSucceeded,
)


@attrs.frozen
class Data:
    a: int = 0
    b: int = 0
    c: int = 0


Ctx = StepContext[Data, Data]
ONCE = Retry(attempts=2, initial_interval=10, jitter=0.0)


def step(ctx: Ctx) -> Data:
    return ctx.data


def undo(ctx: Ctx) -> None:
    return None


class Three(Saga[Data, Data]):
    name = "three"
    new = State(initial=True)
    done = State(final=True)
    go = new.to(done).parallel(
        max_concurrency=2,
        a=Branch(step, undo=undo, writes="a", retry=ONCE),
        b=Branch(step, undo=undo, writes="b", retry=ONCE),
        c=Branch(step, undo=undo, writes="c", retry=ONCE),
    )
    deadline = 100


def started(nxt: object) -> list[str]:
    decision = nxt.decision  # type: ignore[attr-defined]
    assert isinstance(decision, RunBranches), decision
    return [s.transition for s in decision.start]


def test_max_concurrency_bounds_the_steps_running_at_once() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    assert started(first) == ["go.a", "go.b"]
    after_b = core.next(first.snapshot, BranchSucceeded("go.b", Data(b=2), Data()), 1.0)
    assert started(after_b) == ["go.c"]
    assert after_b.snapshot.data == Data(b=2)


def test_a_retry_is_due_later_while_the_others_run() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    error = ErrorInfo("ConnectionError", "flaky")
    retried = core.next(first.snapshot, BranchFailed("go.a", error), 1.0)
    assert retried.decision == RunBranches("go", retried.decision.start, until=11.0)  # type: ignore[union-attr]
    assert started(retried) == ["go.c"]  # a's slot goes to c meanwhile
    assert [r.kind.value for r in retried.records] == ["retry"]


def test_a_failing_fork_drains_the_running_steps_then_compensates_them() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    fatal = ErrorInfo("SoldOut", "none left", retryable=False)
    failing = core.next(first.snapshot, BranchFailed("go.a", fatal), 1.0)
    assert started(failing) == []  # c never starts; b is awaited
    assert failing.snapshot.status is Status.RUNNING
    drained = core.next(failing.snapshot, BranchSucceeded("go.b", Data(b=2), Data()), 2.0)
    assert drained.snapshot.status is Status.COMPENSATING
    assert drained.decision == RunCompensation("go.b", 1, "i:0:go.b:undo", None)
    assert drained.snapshot.error is not None
    assert drained.snapshot.error.step == "go.a"


def test_the_deadline_mid_fork_waits_for_the_running_steps() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    late = core.next(first.snapshot, BranchSucceeded("go.a", Data(a=1), Data()), 150.0)
    assert started(late) == []
    assert [r.kind.value for r in late.records] == ["forward", "deadline"]
    done = core.next(late.snapshot, BranchSucceeded("go.b", Data(b=2), Data()), 151.0)
    assert done.snapshot.status is Status.COMPENSATING
    assert [d.transition for d in done.snapshot.stack] == ["go.a", "go.b"]


def test_a_cancel_while_a_retry_waits_compensates_what_the_branches_did() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    snap = core.next(first.snapshot, BranchSucceeded("go.b", Data(b=2), Data()), 1.0).snapshot
    snap = core.next(snap, BranchSucceeded("go.c", Data(c=3), Data()), 1.0).snapshot
    sleeping = core.next(snap, BranchFailed("go.a", ErrorInfo("E", "flaky")), 2.0)
    assert sleeping.decision == Sleep(12.0)
    cancelled = core.next(sleeping.snapshot, CancelRequested(), 3.0)
    assert cancelled.snapshot.status is Status.COMPENSATING
    assert [d.transition for d in cancelled.snapshot.stack] == ["go.b", "go.c"]


def test_a_step_changing_a_field_it_does_not_own_fails_without_retrying() -> None:
    core = Interpreter(Three.definition)
    first = core.start("i", Data(), Data(), now=0.0, deadline=100.0)
    foreign = core.next(first.snapshot, BranchSucceeded("go.a", Data(a=1, b=9), Data()), 1.0)
    failure = [r for r in foreign.records if r.kind.value == "failure"]
    assert failure
    assert failure[0].error is not None
    assert "changed the context field(s) 'b', which it does not own" in failure[0].error.message


def pay(ctx: Ctx) -> Data:
    return ctx.data


class AfterPivot(Saga[Data, Data]):
    name = "after-pivot"
    new = State(initial=True)
    paid = State()
    done = State(final=True)
    charge = new.to(paid).run(pay, pivot=True)
    ship = paid.to(done).parallel(
        a=Branch(step, writes="a", retry=Retry(attempts=1)),
        b=Branch(step, writes="b", retry=Retry(attempts=1)),
    )


def test_a_fork_past_the_pivot_fails_keeping_its_progress_and_a_retry_finishes_it() -> None:
    core = Interpreter(AfterPivot.definition)
    first = core.start("i", Data(), Data(), now=0.0)
    forked = core.next(first.snapshot, StepSucceeded(Data()), 1.0)
    assert started(forked) == ["ship.a", "ship.b"]
    one = core.next(forked.snapshot, BranchSucceeded("ship.a", Data(a=1), Data()), 2.0)
    failed = core.next(one.snapshot, BranchFailed("ship.b", ErrorInfo("E", "down")), 3.0)
    assert failed.snapshot.status is Status.FAILED
    retried = core.next(failed.snapshot, RetryRequested(), 4.0)
    assert started(retried) == ["ship.b"]  # ship.a is done: not run again
