"""Compiling and checking parallel transitions (``.parallel(...)``) when a saga is defined.

Each failure is a ``DefinitionError`` naming the saga, the transition or branch
at fault, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from statesaga._compile_types import TypeChecks
from statesaga._fsm import Graph
from statesaga.definition import StepDef, TransitionDef
from statesaga.dsl import Transition, duration
from statesaga.errors import DefinitionError
from statesaga.parallel import (
    BranchDef,
    BranchStep,
    ParallelDef,
    branch_step_name,
    branches_problem,
)
from statesaga.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY

__all__ = ["ParallelChecks"]


class ParallelChecks:
    """Builds the ``ParallelDef`` of a transition's branches, and checks them."""

    def __init__(self, fail: Callable[..., DefinitionError], context_type: Any) -> None:
        self.fail = fail
        self.context_type = context_type

    def compile(
        self, spec: Transition, attr: str, source: str, event: str | None
    ) -> ParallelDef | None:
        """The branches of transition ``attr`` (leaving ``source``), or ``None`` if it has none."""
        if spec.branches is None:
            return None
        problem = branches_problem(spec.branches, spec.max_concurrency)
        if problem is not None:
            raise self.fail(f"transition {attr!r}: {problem}", transition=attr)
        if spec.step is not None:
            raise self.fail(
                f"transition {attr!r} both runs a step and has parallel branches; move the "
                "step into a branch, or into a transition of its own before the fork",
                transition=attr,
            )
        if event is not None or spec.timeout_edge:
            trigger = f".on({event!r})" if event is not None else ".on_timeout()"
            raise self.fail(
                f"transition {attr!r} runs parallel branches but is taken {trigger}; a fork "
                "must be automatic: take the event into a state of its own, and fork from there",
                transition=attr,
            )
        owners: dict[str, str] = {}
        fields = self.context_fields()
        branches = []
        for name, branch in spec.branches.items():
            for field in branch.writes:
                if fields is not None and field not in fields:
                    raise self.fail(
                        f"branch {name!r} of {attr!r} writes {field!r}, which is not a field of "
                        f"the context type {self.context_type.__name__}; add the field, or fix "
                        "writes=...",
                        transition=attr,
                    )
                if field in owners:
                    raise self.fail(
                        f"branches {owners[field]!r} and {name!r} of {attr!r} both write the "
                        f"context field {field!r}; concurrent branches must write disjoint "
                        "fields: give each branch a field of its own",
                        transition=attr,
                    )
                owners[field] = name
            count = len(branch.steps)
            steps = tuple(
                self.branch_step(
                    step, branch_step_name(attr, name, index, count), attr, name, source
                )
                for index, step in enumerate(branch.steps)
            )
            branches.append(BranchDef(name, steps, branch.writes))
        return ParallelDef(tuple(branches), spec.max_concurrency)

    def context_fields(self) -> frozenset[str] | None:
        if not attrs.has(self.context_type):
            return None
        return frozenset(f.name for f in attrs.fields(self.context_type))

    def branch_step(
        self, spec: BranchStep, name: str, attr: str, branch: str, source: str
    ) -> TransitionDef:
        if spec.read_only and spec.undo is not None:
            raise self.fail(
                f"branch step {name!r} is marked read_only and has a compensation; drop one "
                "of them",
                transition=attr,
            )
        if spec.undo_on_failure and spec.undo is None:
            raise self.fail(
                f"branch step {name!r} asks for undo_on_failure but has no compensation; "
                "add undo=...",
                transition=attr,
            )
        try:
            timeout = duration(spec.timeout)
        except DefinitionError as error:
            raise self.fail(
                f"the timeout of branch step {name!r}: {error.message}", transition=attr
            ) from None
        if timeout is not None and timeout <= 0:
            raise self.fail(
                f"the timeout of branch step {name!r} must be positive, got {spec.timeout!r}; "
                "use a value > 0",
                transition=attr,
            )
        step = StepDef(
            function=spec.function,
            compensation=spec.undo,
            read_only=spec.read_only,
            retry=spec.retry or DEFAULT_STEP_RETRY,
            retry_declared=spec.retry is not None,
            compensation_retry=spec.undo_retry or DEFAULT_COMPENSATION_RETRY,
            timeout=timeout,
            compensate_on_failure=spec.undo_on_failure,
        )
        # a branch step keeps the run in the fork's source state: compensating it steps
        # back there too
        return TransitionDef(name=name, source=source, target=source, step=step)

    def check(
        self,
        transitions: dict[str, TransitionDef],
        graph: Graph,
        type_checks: TypeChecks,
    ) -> None:
        """Branch steps fit their calls, and none with a compensation runs after a pivot."""
        pivots = frozenset(
            t.name for t in transitions.values() if t.step is not None and t.step.pivot
        )
        after = graph.reachable_from([transitions[p].target for p in pivots])
        for t in transitions.values():
            if t.parallel is None:
                continue
            for step in t.parallel.steps:
                assert step.step is not None
                what = f"branch step {step.name!r}"
                if t.source not in after and not (step.step.compensation or step.step.read_only):
                    raise self.fail(
                        f"branch step {step.name!r} has no compensation; when another branch "
                        "fails it must be undone: add undo=..., or mark it read_only=True if "
                        "it has no side effect (a branch step cannot be a pivot: put the pivot "
                        "after the join)",
                        transition=t.name,
                    )
                type_checks.check_signature(step.step.function, 1, what, t.name)
                type_checks.check_annotations(step.step.function, what, t.name, "data")
                if step.step.compensation is not None:
                    what = f"compensation of branch step {step.name!r}"
                    type_checks.check_signature(step.step.compensation, 1, what, t.name)
                    type_checks.check_annotations(step.step.compensation, what, t.name, "data")
                    if t.source in after:
                        raise self.fail(
                            f"branch step {step.name!r} has a compensation but runs after a "
                            "pivot, where the saga only goes forward; remove undo=... (mark "
                            "it read_only=True if it has no side effect) or move the pivot "
                            "after the join",
                            transition=t.name,
                        )
