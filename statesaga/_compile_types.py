"""The type checks of a saga's definition: input, context, payload and output types
cattrs can structure, and steps, guards and compensations whose signatures fit.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs

from statesaga._annotations import annotation_problem, output_problem, type_text
from statesaga.definition import StateDef, TransitionDef
from statesaga.errors import DefinitionError
from statesaga.serde import converter

__all__ = ["TypeChecks"]


class TypeChecks:
    """Checks of the types a saga declares and the callables it runs.

    Args:
        fail: makes the ``DefinitionError`` for a message, naming the saga.
        input_type, context_type: the saga's ``I`` and ``D``.
        declared_output: the saga's ``O`` (``None`` when left out).
    """

    def __init__(
        self,
        fail: Callable[..., DefinitionError],
        input_type: Any,
        context_type: Any,
        declared_output: Any,
    ) -> None:
        self.fail = fail
        self.input_type = input_type
        self.context_type = context_type
        self.declared_output = declared_output

    def check_types(self, transitions: dict[str, TransitionDef]) -> None:
        self.check_type(self.input_type, "input type")
        self.check_type(self.context_type, "context type")
        for t in transitions.values():
            if t.payload_type is not None:
                self.check_type(
                    t.payload_type,
                    f"payload type of event {t.event!r} on transition {t.name!r}",
                    t.name,
                )

    def check_type(self, type_: Any, what: str, transition: str | None = None) -> None:
        name = getattr(type_, "__name__", repr(type_))
        structured = attrs.has(type_) or dataclasses.is_dataclass(type_)
        if isinstance(type_, type) and not structured and type_ not in _PRIMITIVES:
            raise self.fail(
                f"{what} {name} is neither an attrs class nor a dataclass; decorate it with "
                "@attrs.define (or @attrs.frozen) so cattrs can structure it",
                transition=transition,
            )
        try:
            converter.get_structure_hook(type_)
            converter.get_unstructure_hook(type_)
        except (cattrs.StructureHandlerNotFoundError, TypeError, NameError) as error:
            raise self.fail(
                f"{what} {name} cannot be structured by cattrs ({error}); use attrs classes "
                "with JSON-friendly field types, or register hooks on statesaga.serde.converter",
                transition=transition,
            ) from None

    def check_callables(
        self,
        transitions: dict[str, TransitionDef],
        output: Callable[..., Any] | None,
        initial_context: Callable[..., Any] | None,
    ) -> None:
        for t in transitions.values():
            if t.step is not None and t.step.child is not None:
                pass  # a child step's functions are checked with it (_compile_children)
            elif t.step is not None:
                self.check_signature(t.step.function, 1, f"step {t.name!r}", t.name)
                self.check_annotations(t.step.function, f"step {t.name!r}", t.name, "data")
                if t.step.compensation is not None:
                    what = f"compensation of step {t.name!r}"
                    self.check_signature(t.step.compensation, 1, what, t.name)
                    self.check_annotations(t.step.compensation, what, t.name, "data")
                if t.step.void is not None:
                    what = f"void of pivot {t.name!r}"
                    self.check_signature(t.step.void, 1, what, t.name)
                    self.check_annotations(t.step.void, what, t.name, "data")
            if t.guard is not None:
                what = f"guard of transition {t.name!r}"
                self.check_signature(t.guard, 1, what, t.name)
                self.check_annotations(t.guard, what, t.name, "bool")
        if output is not None:
            self.check_signature(output, 2, "output(input, data)")
            problem = (
                None
                if self.declared_output is None
                else output_problem(output, self.declared_output)
            )
            if problem is not None:
                raise self.fail(problem)
        elif self.declared_output is not None:
            raise self.fail(
                f"the saga declares the output type {type_text(self.declared_output)} but has "
                "no output(input, data); add that static method, or drop the third type "
                "argument of Saga[...]"
            )
        if initial_context is not None:
            self.check_signature(initial_context, 1, "initial_context(input)")
        else:
            try:
                self.context_type()
            except TypeError as error:
                raise self.fail(
                    f"context type {self.context_type.__name__} cannot be built without "
                    f"arguments ({error}); give its fields defaults, or define a static method "
                    "initial_context(input) on the saga"
                ) from None

    def check_state_callables(
        self, states: dict[str, StateDef], deadline_of: Callable[..., Any] | None
    ) -> None:
        """The functions that compute a run's own timeouts and deadline fit their calls."""
        for state in states.values():
            if state.timeout_of is None:
                continue
            what = f"timeout of state {state.name!r}"
            self.check_signature(state.timeout_of, 1, what, state=state.name)
            self.check_annotations(state.timeout_of, what, None, "duration", state=state.name)
        if deadline_of is not None:
            self.check_signature(deadline_of, 1, "deadline(input)")
            if inspect.iscoroutinefunction(deadline_of):
                raise self.fail(
                    "deadline(input) is async, but it is called as the run starts, before "
                    "anything is awaited; make it a plain function"
                )

    def check_annotations(
        self,
        function: Any,
        what: str,
        transition: str | None,
        returns: str,
        *,
        state: str | None = None,
    ) -> None:
        problem = annotation_problem(function, self.input_type, self.context_type, returns=returns)
        if problem is not None:
            name = getattr(function, "__qualname__", None) or repr(function)
            raise self.fail(f"{what} ({name}) {problem}", transition=transition, state=state)

    def check_signature(
        self,
        function: Any,
        arity: int,
        what: str,
        transition: str | None = None,
        *,
        state: str | None = None,
    ) -> None:
        if not callable(function):
            raise self.fail(
                f"{what} is {function!r}, which is not callable", transition=transition, state=state
            )
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return  # builtins without a signature: trust them
        try:
            signature.bind(*range(arity))
        except TypeError:
            expected = "ctx" if arity == 1 else "input, data" if arity == 2 else "..."
            raise self.fail(
                f"{what} has the signature {getattr(function, '__name__', function)}{signature}, "
                f"but is called with ({expected}); make it accept exactly that",
                transition=transition,
                state=state,
            ) from None

    def output_type(self, output: Callable[..., Any] | None) -> Any:
        if output is None:
            return None
        if self.declared_output is not None:
            self.check_type(self.declared_output, "output type")
            return self.declared_output
        try:
            hints = typing.get_type_hints(output)
        except Exception:  # unresolved annotations: leave the output untyped
            return None
        result = hints.get("return")
        if result is not None and result is not type(None):
            self.check_type(result, "output type")
        return result


_PRIMITIVES = (int, float, str, bool, dict, list)
