"""The saga invariants, checked on an :class:`~statesaga.testing.Outcome`, and
:func:`assert_compensates`, which lets hypothesis search for a plan that breaks them.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import given
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from statesaga.core import HistoryKind, Status
from statesaga.definition import Definition, TransitionDef
from statesaga.run import Run
from statesaga.testing._family import check_family, family
from statesaga.testing.driver import Outcome, run_plan
from statesaga.testing.plans import FaultPlan, fault_plans

__all__ = ["InvariantViolation", "assert_compensates", "check_saga_invariants"]

_FORWARD = (HistoryKind.FORWARD, HistoryKind.EVENT, HistoryKind.TIMEOUT)
_INTERRUPTED = (HistoryKind.RETRY, HistoryKind.FAILURE, HistoryKind.DEADLINE, HistoryKind.CANCEL)


class InvariantViolation(AssertionError):
    """A run broke a saga invariant or the domain invariant.

    Attributes:
        outcome: what happened (``outcome.scenario()`` reads as a story).
        examples_to_find: set by :func:`assert_compensates`: how many plans
            hypothesis ran before the first failing one (shrinking not counted).
    """

    def __init__(self, problems: list[str], outcome: Outcome) -> None:
        self.problems = problems
        self.outcome = outcome
        self.examples_to_find: int | None = None
        super().__init__(
            "\n".join(["saga invariant broken:", *(f"- {p}" for p in problems), ""])
            + outcome.scenario()
        )


def check_saga_invariants(outcome: Outcome) -> None:
    """Check the promises of every saga on ``outcome``; raise :class:`InvariantViolation`.

    - every run ended ``completed`` or ``compensated``;
    - a compensated run undid each completed compensatable step since the last
      pivot exactly once, in reverse order, and nothing that never completed
      (a failed ``undo_on_failure`` step excepted);
    - nothing is compensated once a pivot has completed, and a pivot's void runs
      only after the pivot failed for good (never after it succeeded), at most once,
      before the steps before it are compensated;
    - at most one open run per entity key;
    - the history agrees with the run's state;
    - a run whose pivot's call may have taken effect never ends compensated, unless
      the pivot was voided;
    - every event sent without an error is in the run's inbox, and none is left
      pending once the run ended (nothing a customer did is lost);
    - no open run is left with neither a lease nor a due time (the driver's notes);
    - a parallel transition's branch step completes once per fork (a crash or a retry
      never runs a done branch step again), and each branch is undone in reverse.
    - each child run's parent is there, with its correlation id; a completed parent's
      children completed; a compensated parent left no child completed or open.
    """
    problems = list(outcome.notes)
    definitions = family(outcome.definition)
    for run in outcome.runs:
        definition = definitions.get(run.saga, outcome.definition)
        problems.extend(f"run {run.id[:8]}: {p}" for p in _check_run(definition, run))
        problems.extend(f"run {run.id[:8]}: {p}" for p in _check_pivots(outcome, run))
        problems.extend(f"run {run.id[:8]}: {p}" for p in _check_branches(outcome.definition, run))
        problems.extend(f"run {run.id[:8]}: {p}" for p in _check_inbox(outcome, run))
    problems.extend(check_family(outcome.runs))
    keys = collections.Counter(r.key for r in outcome.runs if r.key and r.status.is_open)
    problems.extend(f"{n} open runs on key {k!r}" for k, n in keys.items() if n > 1)
    if problems:
        raise InvariantViolation(problems, outcome)


def _branch_steps_of_fork(definition: Definition, name: str) -> set[str]:
    """The branch steps of the fork ``name`` is (or is a branch step of); empty otherwise."""
    for fork, t in definition.transitions.items():
        if t.parallel is None:
            continue
        steps = {step.name for _, _, step in t.parallel.positions()}
        if name == fork or name in steps:
            return steps
    return set()


def _step_of(definition: Definition, name: str | None) -> TransitionDef | None:
    """The transition, or parallel branch step, a history record names."""
    if name is None:
        return None
    return definition.transitions.get(name) or definition.branch_steps.get(name)


def _check_branches(definition: Definition, run: Run) -> list[str]:
    problems: list[str] = []
    forward = collections.Counter(
        h.transition for h in run.history if h.kind is HistoryKind.FORWARD
    )
    for t in definition.transitions.values():
        if t.parallel is None:
            continue
        forks = forward[t.name] + 1  # each join, and the fork the run may have stopped in
        for branch in t.parallel.branches:
            names = [step.name for step in branch.steps]
            for name in names:
                if forward[name] > forks:
                    problems.append(
                        f"branch step {name!r} completed {forward[name]} times in at most "
                        f"{forks} fork(s): a done branch step ran again"
                    )
            undone = [
                names.index(h.transition)
                for h in run.history
                if h.kind is HistoryKind.COMPENSATE and h.transition in names
            ]
            if forks == 1 and undone != sorted(undone, reverse=True):
                order = [names[i] for i in undone]
                problems.append(f"branch {branch.name!r} was not undone in reverse: {order}")
    return problems


def _check_run(definition: Definition, run: Run) -> list[str]:
    problems: list[str] = []
    if run.status not in (Status.COMPLETED, Status.COMPENSATED):
        problems.append(f"ended {run.status.value}, not completed or compensated ({run.error})")
    history = run.history
    if not history or history[0].kind is not HistoryKind.START:
        return [*problems, "its history does not begin with a start record"]
    versions = [h.version for h in history]
    if versions != sorted(versions):  # one transition may append several records
        problems.append(f"history versions go backwards: {versions}")
    stack: list[str] = []
    pivoted = False
    failed_tries: set[str] = set()
    undone_extra: set[str] = set()
    undone_any = False
    for h in history:
        t = _step_of(definition, h.transition)
        if h.kind in _FORWARD and t is not None:
            failed_tries.discard(t.name)
            if t.step is not None and t.step.pivot:
                stack, pivoted = [], True
            elif t.compensatable:
                stack.append(t.name)
        elif h.kind in _INTERRUPTED and t is not None:
            # a try that failed, or was cut short by the deadline or a cancel (a crash
            # mid-step leaves its effect unknown): an undo_on_failure step is undone too
            failed_tries.add(t.name)
            # ...and so is every unfinished branch step of a fork that stops: which of them
            # were running when a process died is not recorded
            if h.kind is not HistoryKind.RETRY:
                failed_tries.update(_branch_steps_of_fork(definition, t.name))
        elif h.kind is HistoryKind.COMPENSATE:
            if pivoted:
                problems.append(f"compensated {h.transition!r} after a pivot completed")
            if t is not None and t.step is not None and t.step.pivot:
                # a pivot's void: only once the pivot failed for good, once, first of all
                if t.name not in failed_tries or t.name in undone_extra or undone_any:
                    problems.append(
                        f"voided pivot {t.name!r} though it had not just failed for good, or "
                        "twice, or after other steps were compensated"
                    )
                undone_extra.add(t.name)
            elif stack and stack[-1] == h.transition:
                stack.pop()
            elif (
                t is not None
                and t.step is not None
                # (a child the run waited for is undone when a cancel or the deadline stops it)
                and (t.step.compensate_on_failure or t.step.child is not None)
                and t.name in failed_tries
                and t.name not in undone_extra
            ):
                undone_extra.add(t.name)
            else:
                expected = stack[-1] if stack else "nothing"
                problems.append(
                    f"compensated {h.transition!r} out of order or twice (expected {expected})"
                )
            undone_any = True
    if run.status is Status.COMPENSATED and stack:
        problems.append(f"compensated, but {stack} were never compensated")
    if run.status is Status.COMPLETED and not definition.states[run.state].final:
        problems.append(f"completed in non-final state {run.state!r}")
    if history[-1].to_state != run.state:
        problems.append(
            f"state {run.state!r} but the last history record leads to {history[-1].to_state!r}"
        )
    return problems


#: journal results of a call whose effect may have happened
_TOOK_EFFECT = frozenset({"ok", "crash_after", "effect_then_raise"})


def _check_pivots(outcome: Outcome, run: Run) -> list[str]:
    if run.status is not Status.COMPENSATED:
        return []
    pivots = {
        name
        for name, t in outcome.definition.transitions.items()
        if t.step is not None and t.step.pivot
    }
    voided = {h.transition for h in run.history if h.kind is HistoryKind.COMPENSATE}
    called = {
        entry.name
        for entry in outcome.journal
        if entry.instance_id == run.id
        and entry.name in pivots
        and entry.result in _TOOK_EFFECT
        and entry.name not in voided  # its void ran: what it may have done is undone
    }
    return [
        f"pivot {name!r} may have taken effect (its call ran) but the run was compensated"
        for name in sorted(called)
    ]


def _check_inbox(outcome: Outcome, run: Run) -> list[str]:
    problems = []
    kept = {entry.event_id: entry for entry in run.inbox}
    for instance_id, event, event_id, _ in outcome.sent:
        if instance_id == run.id and event_id not in kept:
            problems.append(f"event {event!r} ({event_id}) was sent but is not in its inbox")
    if run.status.is_terminal:
        problems.extend(
            f"event {entry.event!r} ({entry.event_id}) is still pending after the run ended"
            for entry in run.inbox
            if entry.status.value == "pending"
        )
    return problems


def check_domain_invariant(outcome: Outcome, invariant: Callable[[Outcome], Any] | None) -> None:
    """Call the user's ``invariant`` on ``outcome``; raise :class:`InvariantViolation` when it
    fails an assertion or returns ``False``."""
    if invariant is None:
        return
    try:
        verdict = invariant(outcome)
    except AssertionError as error:
        raise InvariantViolation([f"domain invariant: {_explain(error)}"], outcome) from None
    if verdict is False:
        raise InvariantViolation(["domain invariant returned False"], outcome)


def _explain(error: AssertionError) -> str:
    """The assertion's message, or the line that failed when it has none."""
    if str(error):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    return f"assert failed: {frames[-1].line}" if frames else "assert failed"


def assert_compensates(
    saga: type | Definition,
    *,
    input: Any,
    invariant: Callable[[Outcome], Any] | None = None,
    setup: Callable[..., Any] | None = None,
    key: str | Callable[[Any], str | None] | None = None,
    database: str | None = None,
    payloads: dict[str, Any] | None = None,
    resources: Iterable[object] | Callable[[Any], Iterable[object]] | None = None,
    plans: st.SearchStrategy[FaultPlan] | None = None,
    settings: Settings | None = None,
) -> None:
    """Let hypothesis attack ``saga`` with fault plans; fail with the minimal one.

    Each plan runs on a fresh store (see :func:`~statesaga.testing.run_plan`),
    then :func:`check_saga_invariants` and ``invariant(outcome)`` (the user's
    domain invariant: it raises, or returns ``False``, when broken) are checked.
    On failure, the :class:`InvariantViolation` of the shrunk plan is raised,
    its message a readable scenario, its ``examples_to_find`` how many plans it
    took to find the first failing one.

    Args:
        saga: the saga class or definition.
        input: the saga's input, or a strategy of inputs.
        invariant: the domain invariant, given each terminal outcome.
        setup: makes a fresh domain before each plan (``outcome.world``); given the
            plan's database URL if it takes an argument.
        key: the entity key, or a function of the input that gives it.
        database: a database URL (default: a temporary SQLite file per plan).
        payloads: the payload of each event (a value, or a function of the waiting run).
        resources: what the engines hand the steps, or a function of the world.
        plans: the plans to try (default: ``fault_plans(definition)``).
        settings: hypothesis settings (default: the active profile).
    """
    definition = saga if isinstance(saga, Definition) else saga.definition  # type: ignore[attr-defined]
    inputs = input if isinstance(input, st.SearchStrategy) else st.just(input)
    count = [0]
    first: list[int] = []
    seen: list[InvariantViolation] = []

    def check(plan: FaultPlan, saga_input: Any) -> None:
        count[0] += 1
        # the plan's own database lives until the invariant has looked at it
        directory = None if database is not None else tempfile.mkdtemp(prefix="statesaga-plan-")
        url = database or f"sqlite:///{os.path.join(str(directory), 'plan.db')}"
        try:
            outcome = run_plan(
                definition,
                plan,
                input=saga_input,
                database=url,
                setup=setup,
                key=key,
                payloads=payloads,
                resources=resources,
            )
            check_saga_invariants(outcome)
            check_domain_invariant(outcome, invariant)
        except InvariantViolation as violation:
            if not first:
                first.append(count[0])
                seen.append(violation)
            raise
        finally:
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    strategy = plans if plans is not None else fault_plans(definition)
    test = given(strategy, inputs)(check)
    base = settings if settings is not None else Settings()
    test = Settings(base, report_multiple_bugs=False, deadline=None, database=None)(test)
    try:
        test()
    except InvariantViolation as violation:
        violation.examples_to_find = first[0] if first else None
        raise
    except FlakyFailure:
        # a race between threads (events in a burst) broke a promise once and not on the
        # replay: a promise broken once is broken; report the first violation
        if not seen:
            raise
        once = seen[0]
        once.examples_to_find = first[0]
        raise once from None
