"""The checks of child steps (``.child(Saga, input=...)``) and their compiled ``StepDef``.

A child step starts another saga and waits for it: the checks make sure the
child can be compensated when its parent is (it declares no pivot), that the
parent's wait for it is unambiguous (the step's source state takes no events,
and the step is automatic), and that its functions fit their calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from statesaga.definition import ChildDef, Definition, StepDef, TransitionDef
from statesaga.dsl import Transition
from statesaga.errors import DefinitionError
from statesaga.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY

__all__ = ["check_children", "child_step"]

Fail = Callable[..., DefinitionError]


class UndoChild:
    """The compensation of a child step: the runtime compensates (or cancels) the child.

    It is never called as a function; it names the compensation in diagrams and
    history (``undo child book-package``).
    """

    def __init__(self, saga: str) -> None:
        self.__qualname__ = f"undo child {saga}"
        self.saga = saga

    def __call__(self, ctx: Any) -> None:  # pragma: no cover - the runtime never calls it
        raise TypeError(f"the child saga {self.saga!r} is compensated by the runtime")

    def __repr__(self) -> str:
        return f"<{self.__qualname__}>"


def child_step(fail: Fail, spec: Transition, attr: str, timeout: float | None) -> StepDef:
    """The ``StepDef`` of transition ``attr`` declared with ``.child(...)``."""
    saga = spec.child_saga
    definition = getattr(saga, "definition", None)
    if not isinstance(saga, type) or not isinstance(definition, Definition):
        raise fail(
            f"transition {attr!r} starts the child {saga!r}, which is not a Saga class; "
            "pass the child saga's class: .child(BookPackage, input=...)",
            transition=attr,
        )
    pivots = [t.name for t in definition.transitions.values() if t.step and t.step.pivot]
    if pivots:
        raise fail(
            f"child step {attr!r} starts saga {definition.name!r}, whose step {pivots[0]!r} is "
            "a pivot: a child is compensated when its parent compensates, and a pivot never "
            "is; move the pivot into the parent (after the child step), or give the child "
            "saga compensations instead of a pivot",
            transition=attr,
        )
    if not callable(spec.step):
        raise fail(
            f"child step {attr!r}: input={spec.step!r} is not callable; pass "
            "input=lambda ctx: ChildInput(...)",
            transition=attr,
        )
    _check_arity(fail, spec.step, 1, f"input of child step {attr!r}", "ctx", attr)
    if spec.child_output is not None:
        _check_arity(
            fail, spec.child_output, 2, f"output of child step {attr!r}", "ctx, child_output", attr
        )
    return StepDef(
        function=spec.step,
        compensation=UndoChild(definition.name),
        retry=spec.retry or DEFAULT_STEP_RETRY,
        retry_declared=spec.retry is not None,
        compensation_retry=DEFAULT_COMPENSATION_RETRY,
        timeout=timeout,
        child=ChildDef(definition, spec.child_output),
    )


def check_children(fail: Fail, transitions: dict[str, TransitionDef]) -> None:
    """A child step is automatic, and the state it leaves waits for nothing else."""
    for t in transitions.values():
        if t.step is None or t.step.child is None:
            continue
        if not t.automatic:
            how = f".on({t.event!r})" if t.event is not None else ".on_timeout()"
            raise fail(
                f"child step {t.name!r} is taken {how}; a child step must be automatic (the "
                f"parent waits in {t.source!r} for the child): take the event into a state "
                "of its own and start the child from there",
                transition=t.name,
            )
        takes = sorted({o.event for o in transitions.values() if o.source == t.source and o.event})
        if takes or any(o.on_timeout and o.source == t.source for o in transitions.values()):
            raise fail(
                f"state {t.source!r} starts child step {t.name!r} and also waits for "
                f"{', '.join(takes) or 'a timeout'}; while it waits for the child it takes "
                "nothing else: move those transitions to another state",
                state=t.source,
                transition=t.name,
            )


def _check_arity(
    fail: Fail, function: Callable[..., Any], arity: int, what: str, expected: str, attr: str
) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(*range(arity))
    except TypeError:
        raise fail(
            f"{what} has the signature {getattr(function, '__name__', function)}{signature}, "
            f"but is called with ({expected}); make it accept exactly that",
            transition=attr,
        ) from None
