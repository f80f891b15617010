"""The interpreter's promises, checked on generated sagas under generated outcomes.

Hypothesis builds saga classes (linear chains, guarded branches, waiting states
with events and timeouts, random pivots and compensations), then plays the
driver: for each ``Decision`` it draws what happens (the step succeeds, fails and
may be retried, fails for good; the clock moves; an event, a wrong event or a
cancel arrives; a compensation fails; someone retries a failed run). Each run is
recorded as a trace, and the tests check the saga promises on it:

- every run terminates;
- a failed run compensates exactly the completed compensatable steps since the
  last pivot (plus an ``undo_on_failure`` step pending when compensation began), each
  once, in reverse order;
- nothing at or before a pivot is compensated once the pivot ran;
- a step is never started again without a recorded failure in between;
- every snapshot survives a trip through cattrs and JSON unchanged.
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statesaga import CancelNotAllowed, ErrorInfo, EventNotAllowed, HistoryKind, Retry, Saga, State
from statesaga import Status as S
from statesaga.core import (
    BranchChosen,
    CancelRequested,
    ChooseBranch,
    CompensationFailed,
    CompensationSucceeded,
    Decision,
    EventArrived,
    Finish,
    Interpreter,
    Next,
    Outcome,
    RetryRequested,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    StepFailed,
    StepSucceeded,
    Wait,
)
from statesaga.definition import Definition, StepDef
from statesaga.serde import converter, dumps, loads

# -- the types every generated saga uses ---------------------------------------------------


@attrs.frozen
class GeneratedInput:
    n: int = 0


@attrs.frozen
class GeneratedData:
    log: tuple[str, ...] = ()


@attrs.frozen
class Receipt:
    reference: str = "ref-1"


def step(ctx: Any) -> None:
    return None


def undo(ctx: Any) -> None:
    return None


def guard(ctx: Any) -> bool:
    return True


# -- generated definitions ---------------------------------------------------------------

FINALS = ("done", "done_elsewhere")


@attrs.frozen(repr=False)
class EdgeSpec:
    """One transition of a generated saga."""

    name: str
    source: str
    target: str
    trigger: str  # "auto", "guarded", "event" or "timeout"
    effect: str  # "none", "undo", "undo_on_failure", "read_only", "pivot" or "plain"
    event: str | None = None
    payload: bool = False
    retry: Retry = attrs.field(factory=Retry)
    undo_retry: Retry = attrs.field(factory=Retry)

    def __repr__(self) -> str:  # one line each, so a failing example reads at a glance
        trigger = f"on {self.event}{'(Receipt)' if self.payload else ''}"
        trigger = trigger if self.event else self.trigger
        tries = f"{self.retry.attempts} tries, undo {self.undo_retry.attempts} tries"
        return f"<{self.name}: {self.source} -> {self.target} {trigger}, {self.effect}, {tries}>"


@attrs.frozen
class SagaSpec:
    """A generated saga: states ``s0..sN`` (``s0`` initial), final states, and edges."""

    states: tuple[str, ...]
    timeouts: tuple[int | None, ...]
    edges: tuple[EdgeSpec, ...]
    deadline: int | None


SHAPES = ("linear", "branching", "waiting")
# weighted towards steps with compensations, so that failures have something to undo
EFFECTS = ("undo", "undo", "undo_on_failure", "undo_on_failure", "read_only", "none", "pivot")

retries = st.builds(
    Retry,
    attempts=st.integers(1, 3),
    initial_interval=st.integers(1, 5),
    backoff=st.sampled_from([1.0, 2.0]),
    jitter=st.sampled_from([0.0, 0.5]),
)


@st.composite
def saga_specs(draw: st.DrawFn, effects: tuple[str, ...] = EFFECTS) -> SagaSpec:
    """A valid saga whose edges only go forward (so every run can end), by construction.

    Every state ``s{i}`` has a *spine* edge to ``s{i+1}`` (the last one to ``done``),
    so all states are reachable and can finish; other edges jump further ahead.
    """
    count = draw(st.integers(1, 8), label="states")
    states = tuple(f"s{i}" for i in range(count))
    timeouts: list[int | None] = []
    edges: list[tuple[str, str, str]] = []  # (source, target, trigger)

    for i, source in enumerate(states):
        spine = states[i + 1] if i + 1 < count else "done"
        # jumps skip states but seldom end the saga at once, so runs are long enough to fail
        ahead = st.sampled_from([*states[i + 1 :]] or list(FINALS))
        shape = draw(st.sampled_from(SHAPES), label=f"shape of {source}")
        timeout = None
        if shape == "linear":
            edges.append((source, spine, "auto"))
        elif shape == "branching":
            # guarded edges, with either an unguarded fallback or none (all guards may fail)
            fallback = draw(st.booleans(), label="fallback")
            edges.append((source, spine, "auto" if fallback else "guarded"))
            for _ in range(draw(st.integers(0, 2), label="more guards")):
                edges.append((source, draw(ahead), "guarded"))
        else:
            # a waiting state: events, maybe guards tried first, maybe a timeout
            timeout = draw(st.none() | st.integers(1, 100), label="timeout")
            edges.append((source, spine, "event"))
            for _ in range(draw(st.integers(0, 1), label="more events")):
                edges.append((source, draw(ahead), "event"))
            for _ in range(draw(st.integers(0, 1), label="guards")):
                edges.append((source, draw(ahead), "guarded"))
            if timeout is not None and draw(st.booleans(), label="on_timeout"):
                edges.append((source, draw(ahead), "timeout"))
        timeouts.append(timeout)

    specs = []
    for k, (source, target, trigger) in enumerate(edges):
        effect = draw(st.sampled_from(effects), label=f"effect of t{k}")
        specs.append(
            EdgeSpec(
                name=f"t{k}",
                source=source,
                target=target,
                trigger=trigger,
                effect=effect,
                event=f"e{k}" if trigger == "event" else None,
                payload=trigger == "event" and draw(st.booleans(), label="payload"),
                retry=draw(retries, label="retry"),
                undo_retry=draw(retries, label="undo_retry"),
            )
        )
    deadline = draw(st.none() | st.integers(1, 120), label="deadline")
    return SagaSpec(states, tuple(timeouts), _fit_pivots(specs, states[0]), deadline)


def _fit_pivots(edges: list[EdgeSpec], initial: str) -> tuple[EdgeSpec, ...]:
    """Adjust markers to the pivot rules: a step after a pivot has no compensation.

    Such a step becomes ``plain`` (no marker needed after the pivot), or ``read_only``
    if its state can also be reached without passing a pivot (there it needs a marker).
    """
    pivots = {e.name for e in edges if e.effect == "pivot"}
    before = _reachable([initial], edges, skip=pivots)
    after = _reachable([e.target for e in edges if e.name in pivots], edges)
    fitted = []
    for e in edges:
        if e.source in after and e.effect in ("undo", "undo_on_failure"):
            e = attrs.evolve(e, effect="read_only" if e.source in before else "plain")
        fitted.append(e)
    return tuple(fitted)


def _reachable(
    starts: Iterable[str], edges: list[EdgeSpec], skip: frozenset[str] | set[str] = frozenset()
) -> set[str]:
    seen = set(starts)
    queue = deque(seen)
    while queue:
        state = queue.popleft()
        for e in edges:
            if e.source == state and e.name not in skip and e.target not in seen:
                seen.add(e.target)
                queue.append(e.target)
    return seen


def build(spec: SagaSpec) -> Definition:
    """Declare the saga ``spec`` describes as a class, the way a user would, and compile it."""

    def body(namespace: dict[str, Any]) -> None:
        namespace["name"] = "generated"
        states = {
            name: State(initial=i == 0, timeout=timeout)
            for i, (name, timeout) in enumerate(zip(spec.states, spec.timeouts, strict=True))
        }
        # a final state nothing leads to would be unreachable: declare only those in use
        targets = {e.target for e in spec.edges}
        states.update({name: State(final=True) for name in FINALS if name in targets})
        namespace.update(states)
        for e in spec.edges:
            transition = states[e.source].to(states[e.target])
            if e.trigger == "guarded":
                transition.when(guard)
            elif e.trigger == "event":
                assert e.event is not None
                transition.on(e.event, payload=Receipt if e.payload else None)
            elif e.trigger == "timeout":
                transition.on_timeout()
            if e.effect != "none":
                transition.run(
                    step,
                    undo=undo if e.effect in ("undo", "undo_on_failure") else None,
                    pivot=e.effect == "pivot",
                    read_only=e.effect == "read_only",
                    undo_on_failure=e.effect == "undo_on_failure",
                    retry=e.retry,
                    undo_retry=e.undo_retry,
                )
            namespace[e.name] = transition

    saga = types.new_class("GeneratedSaga", (Saga[GeneratedInput, GeneratedData],), {}, body)
    definition: Definition = saga.definition  # type: ignore[attr-defined]
    return definition


# -- the driver: plays a run, drawing what happens at each decision -----------------------

MAX_MOVES = 500
TRANSIENT = ErrorInfo("ConnectionError", "the service did not answer")
PERMANENT = ErrorInfo("Rejected", "the service said no", retryable=False)
INSTANCE = "run-1"


@attrs.frozen
class Move:
    """One exchange: the decision the driver acted on, what it reported, the answer.

    ``outcome`` is ``None`` when the driver only let time pass and asked ``decide``;
    ``answer`` is ``None`` when the interpreter refused the outcome (as it should).
    """

    decision: Decision
    before: Snapshot
    outcome: Outcome | None
    now: float
    answer: Next | None


@attrs.define
class Trace:
    definition: Definition
    start: Next
    moves: list[Move] = attrs.Factory(list)
    finished: bool = False

    @property
    def answers(self) -> list[Next]:
        return [self.start, *(m.answer for m in self.moves if m.answer is not None)]

    @property
    def last(self) -> Next:
        return self.answers[-1]


def cancel_allowed(snapshot: Snapshot, definition: Definition) -> bool:
    return snapshot.status in (S.RUNNING, S.WAITING) and not pivot_may_have_run(
        snapshot, definition
    )


def pivot_may_have_run(snapshot: Snapshot, definition: Definition) -> bool:
    """Past the pivot, or its pivot pending after a try whose outcome was lost."""
    if snapshot.pivoted:
        return True
    if snapshot.status is not S.RUNNING or snapshot.pending is None:
        return False
    step = definition.transitions[snapshot.pending].step
    return step is not None and step.pivot and (snapshot.attempt > 1 or snapshot.pivot_unknown)


# What may happen at each kind of decision, and how often (relative weights). The
# happy outcome comes first: the shrinker simplifies a failing run towards it.
ODDS: dict[str, dict[str, int]] = {
    "step": {"succeed": 16, "fail": 3, "fail for good": 1, "slow": 1, "cancel": 1},
    "undo": {"succeed": 12, "fail": 3, "fail for good": 1, "slow": 1, "cancel": 1},
    "sleep": {"wake": 4, "oversleep": 1, "cancel": 2},
    "branch": {"take a branch": 16, "no guard passes": 1, "cancel": 1},
    "wait": {"event": 10, "time out": 3, "slow": 1, "wrong event": 1, "cancel": 2},
    "failed": {"retry": 2, "give up": 1},
}
# Flaky external calls: failures, retries and interruptions of retries are the rule,
# and most steps cannot tell whether a failed try had an effect (undo_on_failure).
FLAKY_EFFECTS = ("undo_on_failure", "undo_on_failure", "undo", "read_only", "none", "pivot")
FLAKY: dict[str, dict[str, int]] = {
    **ODDS,
    "step": {"succeed": 3, "fail": 3, "fail for good": 1, "slow": 1, "cancel": 1},
    "undo": {"succeed": 3, "fail": 2, "fail for good": 1},
    "sleep": {"wake": 1, "oversleep": 1, "cancel": 1},
}
DELAYS = {"slow": 10.0, "oversleep": 100.0}


def play(
    definition: Definition,
    deadline: int | None,
    data: st.DataObject,
    odds: dict[str, dict[str, int]] = ODDS,
) -> Trace:
    """Drive one run of ``definition``, drawing what happens at each decision by ``odds``.

    A step or compensation takes 1 s (a ``slow`` one 10 s, so deadlines and
    timeouts may strike meanwhile); ``oversleep`` wakes 100 s late; ``cancel`` is
    refused when the run is terminal, compensating or past its pivot; a failed run
    is retried twice at most.
    """
    rand = data.draw(st.randoms(use_true_random=False), label="jitter source")
    core = Interpreter(definition, rand=rand.random)
    now = 0.0
    current = core.start(INSTANCE, GeneratedInput(), GeneratedData(), now=now, deadline=deadline)
    trace = Trace(definition, current)
    retries_left = 2

    def what_happens(kind: str, label: str) -> str:
        weights = odds[kind]
        return data.draw(st.sampled_from([o for o, w in weights.items() for _ in range(w)]), label)

    for _ in range(MAX_MOVES):
        decision, snapshot = current.decision, current.snapshot
        outcome: Outcome | None = None
        if isinstance(decision, Finish):
            if decision.status is not S.FAILED or not retries_left:
                trace.finished = True
                return trace
            if what_happens("failed", "failed run") == "give up":
                trace.finished = True
                return trace
            retries_left -= 1
            outcome = RetryRequested()
        elif isinstance(decision, RunStep):
            happens = what_happens("step", f"step {decision.transition}")
            now += DELAYS.get(happens, 1.0)
            if happens == "cancel":
                outcome = CancelRequested()
            elif happens == "fail":
                outcome = StepFailed(TRANSIENT)
            elif happens == "fail for good":
                outcome = StepFailed(PERMANENT)
            else:
                outcome = StepSucceeded(GeneratedData((*snapshot.data.log, decision.transition)))
        elif isinstance(decision, RunCompensation):
            happens = what_happens("undo", f"undo {decision.transition}")
            now += DELAYS.get(happens, 1.0)
            if happens == "cancel":
                outcome = CancelRequested()
            elif happens == "fail":
                outcome = CompensationFailed(TRANSIENT)
            elif happens == "fail for good":
                outcome = CompensationFailed(PERMANENT)
            else:
                outcome = CompensationSucceeded()
        elif isinstance(decision, ChooseBranch):
            happens = what_happens("branch", "branch")
            fallback = definition.transitions[decision.transitions[-1]].guard is None
            if happens == "cancel":
                outcome = CancelRequested()
            elif happens == "no guard passes" and not fallback:
                outcome = BranchChosen(None)
            else:
                branch = data.draw(st.sampled_from(decision.transitions), label="which branch")
                outcome = BranchChosen(branch)
        elif isinstance(decision, Sleep):
            happens = what_happens("sleep", "sleeping")
            if happens == "cancel":
                outcome = CancelRequested()
            else:
                now = max(now, decision.until) + DELAYS.get(happens, 0.0)
        else:
            assert isinstance(decision, Wait)
            happens = what_happens("wait", "waiting")
            if happens == "cancel":
                outcome = CancelRequested()
            elif happens == "wrong event":
                outcome = EventArrived("no_such_event")
            elif happens == "time out" and decision.until is not None:
                now = max(now, decision.until)
            elif happens == "slow":
                now += DELAYS[happens]
            else:
                event = data.draw(st.sampled_from(decision.events), label="which event")
                payload_type = definition.events_from[snapshot.state][event].payload_type
                outcome = EventArrived(event, None if payload_type is None else payload_type())

        answer: Next | None
        if outcome is None:
            answer = core.decide(snapshot, now)
        elif isinstance(outcome, CancelRequested) and not cancel_allowed(snapshot, definition):
            with pytest.raises(CancelNotAllowed):
                core.next(snapshot, outcome, now)
            answer = None
        elif isinstance(outcome, EventArrived) and outcome.event == "no_such_event":
            with pytest.raises(EventNotAllowed, match="cannot take event 'no_such_event'"):
                core.next(snapshot, outcome, now)
            answer = None
        else:
            answer = core.next(snapshot, outcome, now)
        trace.moves.append(Move(decision, snapshot, outcome, now, answer))
        if answer is not None:
            current = answer
    return trace


# -- the promises, read off a trace ----------------------------------------------------------


def step_of(trace: Trace, transition: str) -> StepDef:
    step_def = trace.definition.transitions[transition].step
    assert step_def is not None
    return step_def


CAUSES = (HistoryKind.FAILURE, HistoryKind.CANCEL, HistoryKind.DEADLINE, HistoryKind.TIMEOUT)


def step_is_undone_on_failure(trace: Trace, transition: str) -> bool:
    step_def = trace.definition.transitions[transition].step
    return step_def is not None and step_def.compensate_on_failure


def expected_compensations(trace: Trace) -> tuple[list[str] | None, list[str]]:
    """What should be undone, by a model that only reads decisions and outcomes.

    Returns the keys of the compensations owed when compensation began (in the order
    they must run; ``None`` if it never began) and the keys actually undone.
    """
    owed: list[str] = []  # completed compensatable steps since the last pivot, oldest first
    expected: list[str] | None = None
    undone: list[str] = []
    for move in trace.moves:
        decision, outcome = move.decision, move.outcome
        if move.answer is None:
            continue
        if isinstance(decision, RunStep) and isinstance(outcome, StepSucceeded):
            step_def = step_of(trace, decision.transition)
            if step_def.pivot:
                owed = []
            elif step_def.compensation is not None:
                owed.append(decision.idempotency_key)
        elif isinstance(decision, RunCompensation):
            assert expected is not None, f"compensation {decision} asked before any failure"
            assert decision.idempotency_key == expected[len(undone)], (
                f"asked to undo {decision.idempotency_key}, expected {expected[len(undone)]} "
                f"(order {expected}, done {undone})"
            )
            if isinstance(outcome, CompensationSucceeded):
                undone.append(decision.idempotency_key)
        status = move.answer.snapshot.status
        if expected is None and status in (S.COMPENSATING, S.COMPENSATED):
            keys = [*owed]
            # the step pending when compensation began (named by the record of its cause) is
            # undone too if it is undo_on_failure: it may have had an effect nothing recorded
            cause = next((r for r in move.answer.records if r.kind in CAUSES), None)
            pending = None if cause is None else cause.transition
            if pending is not None and step_is_undone_on_failure(trace, pending):
                keys.append(
                    f"{move.answer.snapshot.instance_id}:{move.answer.snapshot.seq}:{pending}"
                )
            expected = [f"{key}:undo" for key in reversed(keys)]
    return expected, undone


def assert_snapshot_round_trips(snapshot: Snapshot, definition: Definition) -> None:
    text = dumps(converter.unstructure(snapshot))
    back = converter.structure(loads(text), Snapshot)
    event = back.event
    if event is not None:
        assert back.pending is not None
        payload_type = definition.transitions[back.pending].payload_type
        assert payload_type is not None
        event = converter.structure(event, payload_type)
    back = attrs.evolve(
        back, data=converter.structure(back.data, definition.context_type), event=event
    )
    assert back == snapshot


# -- the properties ----------------------------------------------------------------------------


@given(spec=saga_specs(), data=st.data())
def test_every_run_terminates(spec: SagaSpec, data: st.DataObject) -> None:
    trace = play(build(spec), spec.deadline, data)

    assert trace.finished, f"no end after {MAX_MOVES} moves; last: {trace.last}"
    assert trace.last.snapshot.status.is_terminal


@pytest.mark.parametrize(
    ("effects", "odds"),
    [(EFFECTS, ODDS), (FLAKY_EFFECTS, FLAKY)],
    ids=["mostly-fine", "flaky-external-calls"],
)
@given(data=st.data())
def test_compensation_undoes_exactly_the_completed_steps_since_the_pivot_in_reverse(
    effects: tuple[str, ...], odds: dict[str, dict[str, int]], data: st.DataObject
) -> None:
    spec = data.draw(saga_specs(effects=effects), label="saga")
    trace = play(build(spec), spec.deadline, data, odds)

    expected, undone = expected_compensations(trace)
    final = trace.last.snapshot.status
    if expected is None:
        assert undone == []
        # failed past the pivot, or with a pivot that may have taken effect
        assert (
            final is S.COMPLETED or trace.last.snapshot.pivoted or trace.last.snapshot.pivot_unknown
        )
    else:
        assert len(set(undone)) == len(undone), f"compensated twice: {undone}"
        assert undone == expected[: len(undone)]
        if final is S.COMPENSATED:
            assert undone == expected
        else:
            assert final is S.FAILED  # a compensation kept failing; the rest is still owed
            assert trace.last.snapshot.error is not None


@given(spec=saga_specs(), data=st.data())
def test_nothing_at_or_before_a_pivot_is_compensated_once_it_ran(
    spec: SagaSpec, data: st.DataObject
) -> None:
    trace = play(build(spec), spec.deadline, data)

    completed: list[str] = []
    sealed: set[str] = set()
    for move in trace.moves:
        decision = move.decision
        if isinstance(decision, RunCompensation):
            assert not sealed, f"{decision} after the pivot sealed {sorted(sealed)}"
        if move.answer is None:
            continue
        if isinstance(decision, RunStep) and isinstance(move.outcome, StepSucceeded):
            completed.append(decision.idempotency_key)
            if step_of(trace, decision.transition).pivot:
                sealed.update(completed)
        if sealed:
            assert move.answer.snapshot.pivoted
            assert move.answer.snapshot.stack == ()
            assert move.answer.snapshot.status not in (S.COMPENSATING, S.COMPENSATED)


@given(data=st.data())
def test_once_a_pivot_may_have_taken_effect_nothing_before_it_is_compensated(
    data: st.DataObject,
) -> None:
    # flaky external calls: a pivot's try fails with an unknown outcome (retryable), then
    # the deadline, a cancel or its retries running out must not compensate what came before
    spec = data.draw(saga_specs(effects=FLAKY_EFFECTS), label="saga")
    trace = play(build(spec), spec.deadline, data, FLAKY)

    bound = False
    for move in trace.moves:
        if bound:
            assert not isinstance(move.decision, RunCompensation), move.decision
            if move.answer is not None:
                assert move.answer.snapshot.status not in (S.COMPENSATING, S.COMPENSATED)
        if move.answer is not None and pivot_may_have_run(move.answer.snapshot, trace.definition):
            bound = True
    if bound:
        assert trace.last.snapshot.status in (S.COMPLETED, S.FAILED)


@given(spec=saga_specs(), data=st.data())
def test_a_step_is_started_again_only_after_a_recorded_failure(
    spec: SagaSpec, data: st.DataObject
) -> None:
    trace = play(build(spec), spec.deadline, data)

    last_try: dict[str, int] = {}  # idempotency key -> attempt number of its latest start
    key_of: dict[str, str] = {}  # transition -> key of its latest start
    why_again: dict[str, HistoryKind] = {}  # key -> the failure (or resume) recorded since
    for move in trace.moves:
        decision = move.decision
        if isinstance(decision, RunStep) and isinstance(move.outcome, StepSucceeded | StepFailed):
            key = decision.idempotency_key
            # the key names the instance, the transition and when it was taken: stable
            # across tries, different for each step
            assert key == f"{INSTANCE}:{move.before.seq}:{decision.transition}"
            if key in last_try:
                assert key in why_again, f"{key} started again with no failure recorded"
                if why_again[key] is HistoryKind.RESUME:
                    assert decision.attempt == 1  # someone retried the failed run
                else:
                    assert decision.attempt == last_try[key] + 1
            else:
                assert decision.attempt == 1
            last_try[key] = decision.attempt
            key_of[decision.transition] = key
            why_again.pop(key, None)
        for record in move.answer.records if move.answer is not None else ():
            kinds = (HistoryKind.RETRY, HistoryKind.FAILURE, HistoryKind.RESUME)
            if record.kind in kinds and record.transition in key_of:
                why_again[key_of[record.transition]] = record.kind


@given(spec=saga_specs(), data=st.data())
def test_every_snapshot_round_trips_through_cattrs_and_json(
    spec: SagaSpec, data: st.DataObject
) -> None:
    definition = build(spec)
    trace = play(definition, spec.deadline, data)

    for answer in trace.answers:
        assert_snapshot_round_trips(answer.snapshot, definition)
