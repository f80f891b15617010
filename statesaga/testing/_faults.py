"""The fault wrapping: a definition whose steps and compensations fail, crash or race
as a plan says.

:func:`instrument` returns a new definition (the user's saga class is left
alone) whose every step and compensation is wrapped: before its body the
harness plays the plan's races, then an injected failure, timeout or crash
may replace the call, and after it the plan may make it take effect and
raise, crash, or crash right after its transition commits.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import attrs

from statesaga.definition import Definition, StepDef, TransitionDef
from statesaga.errors import StepTimeout
from statesaga.testing._family import step_names
from statesaga.testing._harness import _Harness
from statesaga.testing._outcome import Crash, InjectedFailure, InjectedFatalFailure

__all__ = ["after_body", "instrument", "wrap"]


def wrap(h: _Harness, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def faulty(ctx: Any) -> Any:
        h.before_body(ctx, name)
        fault = h.take(name, ("retryable", "fatal", "timeout", "crash_before"))
        if fault is not None:
            h.note(ctx, name, fault.kind, ran=False)
            if fault.kind == "crash_before":
                raise Crash(f"crash before {name}")
            if fault.kind == "timeout":
                raise StepTimeout(f"{name} timed out (injected)", step=name)
            if fault.kind == "fatal":
                raise InjectedFatalFailure(f"{name} failed for good (injected)")
            raise InjectedFailure(f"{name} failed (injected)")
        try:
            value = function(ctx)
        except Exception:
            h.note(ctx, name, "raised", ran=True)
            raise
        if inspect.isawaitable(value):
            return _after_async(h, ctx, name, value)
        after_body(h, ctx, name)
        return value

    return faulty


async def _after_async(h: _Harness, ctx: Any, name: str, awaitable: Any) -> Any:
    try:
        value = await awaitable
    except Exception:
        h.note(ctx, name, "raised", ran=True)
        raise
    after_body(h, ctx, name)
    return value


def after_body(h: _Harness, ctx: Any, name: str) -> None:
    if h.take(name, ("effect_then_raise",)) is not None:
        h.note(ctx, name, "effect_then_raise", ran=True)
        raise InjectedFailure(f"{name} took effect, then failed (injected)")
    if h.take(name, ("crash_after",)) is not None:
        h.note(ctx, name, "crash_after", ran=True)
        raise Crash(f"crash after {name}")
    if h.take(name, ("crash_after_commit",)) is not None:
        h.commit_crash.add(f"{ctx.instance_id}:{name}")
    h.note(ctx, name, "ok", ran=True)


def _refusable(
    h: _Harness, event: str, guard: Callable[..., Any], negated: bool
) -> Callable[..., Any]:
    """An event's guard that refuses the delivery the plan says is wrong (``refused``)."""

    @functools.wraps(guard)
    def judged(ctx: Any) -> Any:
        if h.refusing == (ctx.instance_id, event):
            h.note(ctx, f"{ctx.step}.guard", "refused", ran=False)
            return negated  # the answer that refuses: False for .when, True for .unless
        return guard(ctx)

    return judged


def instrument(h: _Harness, definition: Definition | None = None) -> Definition:
    """The definition with every step and compensation wrapped (and no retry jitter),
    its child sagas' too (their steps named ``<child saga>/<transition>``)."""
    definition = h.definition if definition is None else definition
    transitions: dict[str, TransitionDef] = {}
    # a parallel transition's branch steps are wrapped as any step, under their own names
    original, definition = definition, definition.map_steps(lambda t: _faulty(h, t))
    for transition, t in definition.transitions.items():
        name = step_names(h.definition, original, transition)
        if t.step is not None:
            step: StepDef = t.step
            child = step.child
            step = attrs.evolve(
                step,
                function=wrap(h, name, step.function),
                # a child step's undo is the runtime's, never called: left as it is
                compensation=step.compensation
                if step.compensation is None or child is not None
                else wrap(h, f"{name}.undo", step.compensation),
                # a pivot's void is its compensation as far as plans go: ``<pivot>.undo``
                void=None if step.void is None else wrap(h, f"{name}.undo", step.void),
                child=None
                if child is None
                else attrs.evolve(child, definition=instrument(h, child.definition)),
                retry=attrs.evolve(step.retry, jitter=0.0),
                compensation_retry=attrs.evolve(step.compensation_retry, jitter=0.0),
            )
            t = attrs.evolve(t, step=step)
        if t.event is not None and t.guard is not None:
            t = attrs.evolve(t, guard=_refusable(h, t.event, t.guard, t.guard_negated))
        transitions[transition] = t
    return definition.with_transitions(transitions)


def _faulty(h: _Harness, t: TransitionDef) -> TransitionDef:
    """A branch step wrapped (ordinary steps are wrapped by ``instrument`` itself)."""
    if t.name in h.definition.transitions or t.step is None:
        return t
    step = t.step
    return attrs.evolve(
        t,
        step=attrs.evolve(
            step,
            function=wrap(h, t.name, step.function),
            compensation=None
            if step.compensation is None
            else wrap(h, f"{t.name}.undo", step.compensation),
            retry=attrs.evolve(step.retry, jitter=0.0),
            compensation_retry=attrs.evolve(step.compensation_retry, jitter=0.0),
        ),
    )
