"""Check a saga's functions' annotations against its ``Saga[I, D, O]`` types.

mypy cannot see the saga's type arguments from a class body
(``new.to(done).run(step)`` knows nothing of ``Saga[Cart, Checkout]``), so the
compiler reads the annotations when the class is created: a step annotated
``StepContext[Other, Other]``, or returning ``str``, is a ``DefinitionError``
at import time rather than a run that compensates in production. String
annotations (``from __future__ import annotations``) are resolved with
``typing.get_type_hints``; a function whose annotations cannot be resolved
(names imported only under ``TYPE_CHECKING``) is left to mypy.
"""

from __future__ import annotations

import collections.abc
import datetime
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from statesaga.context import StepContext

__all__ = ["annotation_problem", "migration_context_problem", "output_problem", "type_text"]

_AWAITABLES = (collections.abc.Awaitable, collections.abc.Coroutine)
_ANYTHING = (Any, object, typing.NoReturn, getattr(typing, "Never", typing.NoReturn))


def annotation_problem(
    function: Callable[..., Any],
    input_type: Any,
    context_type: Any,
    *,
    returns: str,
) -> str | None:
    """What contradicts the saga's types in ``function(ctx)``'s annotations, or ``None``.

    ``returns`` is ``"data"`` for a step (``D | None``), ``"ignored"`` for a
    compensation (``D | None`` too: anything else is a mistake), ``"bool"``
    for a guard or ``"duration"`` for a timeout (seconds, ``timedelta`` or ``None``).
    """
    hints, first = _hints(function)
    if hints is None:
        return None
    expected = f"StepContext[{type_text(input_type)}, {type_text(context_type)}]"
    declared = hints.get(first) if first is not None else None
    if declared is not None and not _accepts_context(declared, input_type, context_type):
        return (
            f"takes {first}: {type_text(declared)}, but it is called with a {expected}; "
            f"annotate it {first}: {expected}"
        )
    if "return" not in hints:
        return None
    result = _awaited(hints["return"])
    if returns == "duration":
        if not _returns_duration(result):
            return (
                f"returns {type_text(result)}, but a timeout is a duration; return seconds "
                "(a float), a timedelta, or None for no timeout"
            )
        return None
    if returns == "bool":
        if not _fits(result, bool):
            return f"returns {type_text(result)}, but a guard answers bool; return a bool"
        return None
    if not _returns_data(result, context_type):
        data = type_text(context_type)
        return (
            f"returns {type_text(result)}, but it must return the saga's context data "
            f"({data}) or None; annotate it -> {data} | None and return new data or None"
        )
    return None


def output_problem(function: Callable[..., Any], output_type: Any) -> str | None:
    """What contradicts the declared output type in ``output``'s return annotation."""
    hints, _ = _hints(function)
    if hints is None or "return" not in hints:
        return None
    if _returns_exactly(hints["return"], output_type):
        return None
    return (
        f"output() returns {type_text(hints['return'])}, but the saga declares its output "
        f"type as {type_text(output_type)}; make them agree"
    )


def migration_context_problem(
    function: Callable[..., Any], old_type: Any, new_type: Any
) -> str | None:
    """What contradicts a migration's ``context(old) -> new`` annotations, or ``None``."""
    hints, first = _hints(function)
    if hints is None:
        return None
    declared = hints.get(first) if first is not None else None
    if declared is not None and not _fits(old_type, declared):
        return (
            f"takes {first}: {type_text(declared)}, but it is called with the old context, a "
            f"{type_text(old_type)}; annotate it {first}: {type_text(old_type)}"
        )
    result = hints.get("return")
    mapping = collections.abc.Mapping
    if result is None or result in _ANYTHING or _fits(result, new_type):
        return None
    if typing.get_origin(result) in (dict, mapping) or result in (dict, mapping):
        return None  # a mapping of the new type's fields, structured strictly
    return (
        f"returns {type_text(result)}, but the new context type is {type_text(new_type)}; "
        f"annotate it -> {type_text(new_type)} and return one"
    )


def type_text(value: Any) -> str:
    """A type as a reader writes it: ``Cart``, ``list[str]``, ``Cart | None``."""
    if value is type(None) or value is None:
        return "None"
    if isinstance(value, typing.TypeVar):
        return value.__name__
    if _is_union(value):
        return " | ".join(type_text(member) for member in typing.get_args(value))
    origin, args = typing.get_origin(value), typing.get_args(value)
    if origin is not None and args:
        name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(type_text(a) for a in args)}]"
    if isinstance(value, type):
        return value.__name__
    return repr(value).replace("typing.", "")


def _hints(function: Callable[..., Any]) -> tuple[dict[str, Any] | None, str | None]:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None, None
    first = parameters[0].name if parameters else None
    target = function
    if not (inspect.isfunction(function) or inspect.ismethod(function)):
        target = type(function).__call__  # a callable object: its method's annotations
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an unresolvable annotation: leave it to mypy
        return None, None
    return hints, first


def _accepts_context(declared: Any, input_type: Any, context_type: Any) -> bool:
    if declared in _ANYTHING or isinstance(declared, typing.TypeVar):
        return True
    if declared is StepContext:
        return True
    if typing.get_origin(declared) is StepContext:
        want_input, want_data = typing.get_args(declared)
        return _fits(input_type, want_input) and _fits(context_type, want_data)
    if _is_union(declared):
        return any(_accepts_context(a, input_type, context_type) for a in typing.get_args(declared))
    return False


def _fits(actual: Any, declared: Any) -> bool:
    """Whether a value of type ``actual`` may be passed where ``declared`` is annotated."""
    if declared in _ANYTHING or actual is Any or isinstance(declared, typing.TypeVar):
        return True
    if actual == declared:
        return True
    if _is_union(declared):
        return any(_fits(actual, member) for member in typing.get_args(declared))
    if _is_union(actual):
        return all(_fits(member, declared) for member in typing.get_args(actual))
    origin = typing.get_origin(declared)
    if origin is not None:
        # generics: compare what can be compared at run time, their origins
        return typing.get_origin(actual) == origin or _subclass(actual, origin)
    return _subclass(actual, declared)


def _returns_data(result: Any, context_type: Any) -> bool:
    if result in _ANYTHING or result is None or result is type(None):
        return True
    if _is_union(result):
        return all(_returns_data(member, context_type) for member in typing.get_args(result))
    return _fits(result, context_type)


def _returns_duration(result: Any) -> bool:
    if _is_union(result):
        return all(_returns_duration(member) for member in typing.get_args(result))
    return result in _ANYTHING or result in (None, type(None)) or _subclass(result, _DURATIONS)


_DURATIONS = (int, float, datetime.timedelta)


def _returns_exactly(result: Any, declared: Any) -> bool:
    return result in _ANYTHING or _fits(result, declared)


def _awaited(result: Any) -> Any:
    """``X`` for ``Awaitable[X]`` or ``Coroutine[..., X]`` (a sync function returning one)."""
    if typing.get_origin(result) in _AWAITABLES:
        args = typing.get_args(result)
        return args[-1] if args else Any
    return result


def _is_union(value: Any) -> bool:
    return typing.get_origin(value) in (typing.Union, types.UnionType)


def _subclass(actual: Any, declared: Any) -> bool:
    try:
        return isinstance(actual, type) and issubclass(actual, declared)
    except TypeError:
        return False
