"""The interpreter's rules for per-run timeouts, guarded events and a pivot's void,
checked on generated sagas under generated outcomes (as tests/test_core_properties.py
does for the rest).

Each generated saga runs steps (some compensatable), waits in a state whose timeout is
fixed or computed per run for an event taken by guarded transitions (maybe with an
unguarded fallback), then runs a pivot (maybe with a void) and a step after it. The
driver answers every decision at random, guards and timeout functions included, and
the tests check:

- every run terminates;
- a pivot's void runs only after the pivot failed for good, never after it succeeded,
  at most once, before anything else is compensated; without a void nothing before a
  pivot that may have taken effect is compensated;
- an event the guards refuse changes nothing: the run waits on, its timeout untouched;
- a measured timeout is the wait's timeout, from the moment it was measured;
- every snapshot survives a trip through cattrs and JSON.
"""

from __future__ import annotations

import types
from datetime import timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statesaga import ErrorInfo, EventNotAllowed, Retry, Saga, State
from statesaga import Status as S
from statesaga.core import (
    CancelRequested,
    CompensationFailed,
    CompensationSucceeded,
    EventArrived,
    EventJudged,
    Finish,
    Interpreter,
    JudgeEvent,
    MeasureTimeout,
    Next,
    Outcome,
    RetryRequested,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    StepFailed,
    StepSucceeded,
    TimeoutMeasured,
    Wait,
)
from statesaga.definition import Definition
from statesaga.errors import CancelNotAllowed
from statesaga.serde import converter, dumps, loads


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    n: int = 0


def step(ctx: Any) -> None:
    return None


def undo(ctx: Any) -> None:
    return None


def guard(ctx: Any) -> bool:
    return True


def window(ctx: Any) -> float:
    return 60.0


@attrs.frozen
class Spec:
    before: int  # compensatable steps before the wait
    computed: bool  # the wait's timeout is computed per run
    guarded: int  # guarded transitions for the event
    fallback: bool  # and an unguarded one
    void: bool  # the pivot declares a void
    attempts: int  # the pivot's tries


specs = st.builds(
    Spec,
    before=st.integers(0, 2),
    computed=st.booleans(),
    guarded=st.integers(1, 3),
    fallback=st.booleans(),
    void=st.booleans(),
    attempts=st.integers(1, 3),
)


def build(spec: Spec) -> Definition:
    def body(ns: dict[str, Any]) -> None:
        ns["name"] = "generated"
        chain = [State(initial=True), *(State() for _ in range(spec.before))]
        waiting = State(timeout=window if spec.computed else 100)
        confirmed, paid, done = State(), State(), State(final=True)
        for i, state in enumerate(chain):
            ns[f"s{i}"] = state
        ns.update(waiting=waiting, confirmed=confirmed, paid=paid, done=done)
        for i, state in enumerate(chain):
            target = chain[i + 1] if i + 1 < len(chain) else waiting
            ns[f"t{i}"] = state.to(target).run(step, undo=undo, retry=Retry(attempts=2))
        for g in range(spec.guarded):
            ns[f"g{g}"] = waiting.to(confirmed).on("answered").when(guard)
        if spec.fallback:
            ns["otherwise"] = waiting.to(confirmed).on("answered")
        ns["pay"] = confirmed.to(paid).run(
            step, pivot=True, void=undo if spec.void else None, retry=Retry(attempts=spec.attempts)
        )
        ns["finish"] = paid.to(done).run(step)

    saga = types.new_class("Generated", (Saga[In, Data],), {}, body)
    definition: Definition = saga.definition  # type: ignore[attr-defined]
    return definition


#: what timeout functions answer: mostly durations, sometimes none, sometimes nonsense
MEASURED: list[Any] = [
    30.0,
    30.0,
    0,
    timedelta(seconds=45),
    timedelta(seconds=45),
    None,
    "soon",
    -1,
    "raise",
]
TRANSIENT = ErrorInfo("ConnectionError", "no answer")
PERMANENT = ErrorInfo("Declined", "no", retryable=False)


@attrs.define
class Trace:
    definition: Definition
    answers: list[Next] = attrs.Factory(list)
    moves: list[tuple[Snapshot, Outcome | None, Next | None, float]] = attrs.Factory(list)
    finished: bool = False


def play(definition: Definition, data: st.DataObject, deadline: float | None) -> Trace:
    core = Interpreter(definition, rand=lambda: 0.0)
    now = 0.0
    current = core.start("run-1", In(), Data(), now=now, deadline=deadline)
    trace = Trace(definition, [current])
    retried = False
    for _ in range(300):
        decision, snapshot = current.decision, current.snapshot
        outcome: Outcome | None = None
        if isinstance(decision, Finish):
            if decision.status is not S.FAILED or retried:
                trace.finished = True
                return trace
            retried, outcome = True, RetryRequested()
        elif isinstance(decision, RunStep):
            now += 1
            # the pivot's answer is often lost: that is where a void matters
            odds = (
                ["ok", "fail", "fail", "fail for good"]
                if decision.transition == "pay"
                else ["ok"] * 8 + ["fail", "fail for good", "cancel"]
            )
            what = data.draw(st.sampled_from(odds))
            outcome = {
                "ok": StepSucceeded(Data(snapshot.data.n + 1)),
                "fail": StepFailed(TRANSIENT),
                "fail for good": StepFailed(PERMANENT),
                "cancel": CancelRequested(),
            }[what]
        elif isinstance(decision, RunCompensation):
            now += 1
            what = data.draw(st.sampled_from(["ok", "ok", "ok", "fail", "fail for good"]))
            outcome = {
                "ok": CompensationSucceeded(),
                "fail": CompensationFailed(TRANSIENT),
                "fail for good": CompensationFailed(PERMANENT),
            }[what]
        elif isinstance(decision, Sleep):
            now = max(now, decision.until)
        elif isinstance(decision, MeasureTimeout):
            value = data.draw(st.sampled_from(MEASURED))
            outcome = (
                TimeoutMeasured(error=ErrorInfo("KeyError", "no window"))
                if value == "raise"
                else TimeoutMeasured(value)
            )
        elif isinstance(decision, JudgeEvent):
            verdict = data.draw(st.sampled_from([*decision.transitions, None, "raise"]))
            judged = EventJudged(
                decision.event,
                decision.payload,
                decision.received_at,
                None if verdict in (None, "raise") else verdict,
                ErrorInfo("KeyError", "rooms") if verdict == "raise" else None,
            )
            fit = core.guard_fit(snapshot, judged)
            if not fit.accepted:
                # refused: nothing changes, the run keeps waiting on its own timeout
                assert fit.reason
                kept = core.decide(snapshot, now)
                if snapshot.wake_at is None or now < snapshot.wake_at:
                    assert kept.snapshot == snapshot
                    assert isinstance(kept.decision, Wait)
                trace.moves.append((snapshot, None, kept, now))
                current = kept
                trace.answers.append(current)
                continue
            outcome = judged
        else:
            assert isinstance(decision, Wait)
            what = data.draw(st.sampled_from(["event"] * 6 + ["time out", "cancel", "wrong"]))
            if what == "time out" and decision.until is not None:
                now = max(now, decision.until)
            elif what == "cancel":
                outcome = CancelRequested()
            elif what == "wrong":
                with pytest.raises(EventNotAllowed):
                    core.next(snapshot, EventArrived("nope"), now)
            else:
                now += data.draw(st.sampled_from([1.0, 50.0]))
                outcome = EventArrived("answered", None, now)
        answer: Next | None
        if outcome is None:
            answer = core.decide(snapshot, now)
        elif isinstance(outcome, CancelRequested) and not core.cancel_fit(snapshot).accepted:
            with pytest.raises(CancelNotAllowed):
                core.next(snapshot, outcome, now)
            answer = None
        else:
            answer = core.next(snapshot, outcome, now)
        trace.moves.append((snapshot, outcome, answer, now))
        if answer is not None:
            current = answer
            trace.answers.append(answer)
    return trace


@given(spec=specs, data=st.data(), deadline=st.none() | st.sampled_from([20.0, 500.0]))
def test_every_run_terminates(spec: Spec, data: st.DataObject, deadline: float | None) -> None:
    trace = play(build(spec), data, deadline)

    assert trace.finished
    assert trace.answers[-1].snapshot.status.is_terminal


@given(spec=specs, data=st.data(), deadline=st.none() | st.sampled_from([20.0, 500.0]))
def test_a_void_runs_only_after_the_pivot_failed_for_good_and_first(
    spec: Spec, data: st.DataObject, deadline: float | None
) -> None:
    trace = play(build(spec), data, deadline)

    pivot_succeeded = pivot_failed_for_good = False
    undone: list[str] = []
    for before, outcome, answer, _ in trace.moves:
        if answer is None:
            continue
        if before.pending == "pay" and before.status is S.RUNNING:
            if isinstance(outcome, StepSucceeded):
                pivot_succeeded = True
            elif isinstance(outcome, StepFailed) and answer.snapshot.status is not S.RUNNING:
                pivot_failed_for_good = True
        decision = answer.decision
        if isinstance(decision, RunCompensation) and decision.transition == "pay":
            assert spec.void
            assert pivot_failed_for_good
            assert not pivot_succeeded
            assert decision.idempotency_key == f"run-1:{before.seq}:pay:undo"
            assert not undone, f"the void comes first, not after {undone}"
        if isinstance(outcome, CompensationSucceeded):
            undone.append(before.stack[-1].transition)
    assert undone.count("pay") <= 1
    last = trace.answers[-1].snapshot
    if pivot_failed_for_good and spec.void and last.status is S.COMPENSATED:
        assert undone[0] == "pay"
        assert sorted(undone[1:]) == sorted(f"t{i}" for i in range(spec.before + 1))
    if pivot_failed_for_good and not spec.void:
        assert "pay" not in undone
        assert undone == [] or last.status is not S.COMPENSATED or not _bound_failure(trace)


def _bound_failure(trace: Trace) -> bool:
    """The pivot failed for good after a try whose outcome was unknown (it bound the run)."""
    for before, outcome, answer, _ in trace.moves:
        if (
            before.pending == "pay"
            and isinstance(outcome, StepFailed)
            and answer is not None
            and answer.snapshot.status is S.FAILED
        ):
            return True
    return False


@given(spec=specs, data=st.data())
def test_a_measured_timeout_is_the_wait_from_the_moment_it_was_measured(
    spec: Spec, data: st.DataObject
) -> None:
    trace = play(build(spec), data, None)

    for before, outcome, answer, now in trace.moves:
        if not isinstance(outcome, TimeoutMeasured) or answer is None:
            continue
        assert before.measure_timeout
        assert not answer.snapshot.measure_timeout
        value = outcome.value
        if outcome.error is None and isinstance(value, int | float | timedelta):
            seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
            if seconds > 0 and isinstance(answer.decision, Wait):
                assert answer.decision.until == now + seconds
                assert answer.snapshot.wake_at == now + seconds
        elif outcome.error is None and value is None and isinstance(answer.decision, Wait):
            assert answer.decision.until is None
        else:
            # no duration: the run stops as a failed step would, with the fix in its error
            assert answer.snapshot.status in (S.COMPENSATING, S.COMPENSATED, S.FAILED)
            assert answer.snapshot.error is not None
            assert answer.snapshot.error.step == "waiting.timeout"


@given(spec=specs, data=st.data())
def test_every_snapshot_round_trips_through_cattrs_and_json(
    spec: Spec, data: st.DataObject
) -> None:
    definition = build(spec)
    trace = play(definition, data, 500.0)

    for answer in trace.answers:
        snapshot = attrs.evolve(answer.snapshot, event=None)
        back = converter.structure(loads(dumps(converter.unstructure(snapshot))), Snapshot)
        back = attrs.evolve(back, data=converter.structure(back.data, Data))
        assert back == snapshot
