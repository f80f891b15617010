"""Failures: a step's exception <-> the error info stored with its run, both ways.

A step that raises has its exception *captured* as an
:class:`~statesaga.core.ErrorInfo`: its type's name and message (for people),
an :class:`~statesaga.core.ErrorKind` (for code), whether it may be retried,
and its **details**, the JSON values the exception carried. The error info is
stored with the transition (and the run), so an application reads what the
step saw, ``run.error.details["available"]``, instead of querying again for
values that may have changed since; or it *rebuilds* its own exception, with
its attributes, from the run's error (:func:`rebuild`). This is the role of
Temporal's ``ApplicationError.details`` and its failure converter.

What goes into ``details`` (:func:`details_of`):

1. An exception with a ``details`` attribute that is a mapping gives exactly
   that mapping: the application chose what to record.
2. Otherwise its public attributes: the fields of an attrs exception class,
   and the instance attributes whose names do not start with ``_`` (what
   ``self.sku = sku`` in ``__init__`` sets). statesaga's own errors keep
   their context this way (``StepTimeout.step``, ``EventNotAllowed.event``).
3. Only JSON values are kept: ``None``, booleans, integers, finite floats,
   strings, and lists (or tuples) and string-keyed mappings of those; enums
   and other subclasses of these become the plain value. Any other value
   (an object, a ``datetime``, a ``Decimal``, ``nan``) is left out, with its
   name: details never hold an object that cannot be stored, nor a repr an
   application would have to parse. Put such a value in as a string (or a
   number) if the application needs it.

>>> class OutOfStock(Exception):
...     def __init__(self, message, *, sku, available):
...         super().__init__(message)
...         self.sku = sku
...         self.available = available
...         self.checked_at = object()  # not JSON: left out
>>> info = capture(OutOfStock("only 1 mug left", sku="mug", available=1), retryable=False)
>>> info.kind, info.details
(<ErrorKind.STEP_ERROR: 'step_error'>, {'sku': 'mug', 'available': 1})
>>> again = rebuild(info, known=[OutOfStock])
>>> type(again).__name__, str(again), again.sku, again.available
('OutOfStock', 'only 1 mug left', 'mug', 1)

Error info crosses the store as JSON through :func:`encode` and
:func:`decode`; rows written before ``kind`` and ``details`` existed decode
with the kind their type name implied and no details.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from statesaga.core import ErrorInfo, ErrorKind
from statesaga.errors import StepTimeout

__all__ = ["capture", "decode", "details_of", "encode", "json_details", "rebuild", "type_name"]

E = TypeVar("E", bound=BaseException)

_MAX_DEPTH = 16

# the type names of the failures the interpreter decided, before ``kind`` was stored
_LEGACY_KINDS = {
    "StepTimeout": ErrorKind.STEP_TIMEOUT,
    "DeadlinePassed": ErrorKind.DEADLINE,
    "WaitTimedOut": ErrorKind.WAIT_TIMEOUT,
    "Cancelled": ErrorKind.CANCELLED,
    "NoTransitionAllowed": ErrorKind.NO_TRANSITION,
    "EventRejected": ErrorKind.REJECTED,
    "CancelRejected": ErrorKind.REJECTED,
}


def type_name(kind: type[BaseException]) -> str:
    """The name an exception type is recorded under, and looked up by in :func:`rebuild`.

    Qualified by its module, except builtins and :class:`~statesaga.StepTimeout`.

    >>> type_name(KeyError), type_name(StepTimeout), type_name(attrs.exceptions.FrozenError)
    ('KeyError', 'StepTimeout', 'attr.exceptions.FrozenError')
    """
    if kind is StepTimeout or kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def capture(error: BaseException, *, retryable: bool) -> ErrorInfo:
    """A step's exception as the error info stored with its transition.

    Its kind is ``STEP_TIMEOUT`` for a :class:`~statesaga.StepTimeout`, else
    ``STEP_ERROR``; its details are :func:`details_of` it.
    """
    kind = ErrorKind.STEP_TIMEOUT if isinstance(error, StepTimeout) else ErrorKind.STEP_ERROR
    return ErrorInfo(
        type_name(type(error)),
        str(error) or type(error).__name__,
        retryable,
        kind=kind,
        details=details_of(error),
    )


def details_of(error: BaseException) -> dict[str, Any]:
    """The JSON values ``error`` carries (the rules are in this module's docstring).

    >>> class Declined(Exception):
    ...     details = {"code": "card_declined", "amount": 1250}
    >>> details_of(Declined("declined"))
    {'code': 'card_declined', 'amount': 1250}
    """
    try:
        explicit = getattr(error, "details", None)
    except Exception:  # a property that raises: no explicit details
        explicit = None
    if isinstance(explicit, Mapping):
        return json_details(explicit)
    found: dict[str, Any] = {}
    kind = type(error)
    if attrs.has(kind):
        found.update((f.name, getattr(error, f.name, None)) for f in attrs.fields(kind))
    found.update(
        (name, value)
        for name, value in getattr(error, "__dict__", {}).items()
        if isinstance(name, str) and not name.startswith("_")
    )
    return json_details(found)


def json_details(values: Mapping[Any, Any]) -> dict[str, Any]:
    """``values`` as details: string keys only, and only the JSON values (the others left out).

    >>> from decimal import Decimal
    >>> json_details({"sku": "mug", "skus": ("mug", "cup"), "price": Decimal("9.99")})
    {'sku': 'mug', 'skus': ['mug', 'cup']}
    """
    kept = {}
    for name, value in values.items():
        if isinstance(name, str):
            ok, plain = _json(value, 0)
            if ok:
                kept[str.__str__(name)] = plain
    return kept


def _json(value: Any, depth: int) -> tuple[bool, Any]:
    """(is JSON, the plain value): subclasses of JSON types become their plain type."""
    if value is None or value is True or value is False:
        return True, value
    if isinstance(value, bool):
        return True, bool(value)
    if isinstance(value, int):
        return True, int(value)
    if isinstance(value, float):
        return math.isfinite(value), float(value)
    if isinstance(value, str):
        return True, str.__str__(value)
    if depth >= _MAX_DEPTH:
        return False, None
    if isinstance(value, list | tuple):
        items = [_json(item, depth + 1) for item in value]
        return all(ok for ok, _ in items), [plain for _, plain in items]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            return False, None
        entries = {str.__str__(k): _json(v, depth + 1) for k, v in value.items()}
        return all(ok for ok, _ in entries.values()), {k: p for k, (_, p) in entries.items()}
    return False, None


def rebuild(error: ErrorInfo, known: Iterable[type[E]]) -> E | None:
    """The application's exception back from a run's recorded ``error``, with its attributes.

    ``known`` lists the exception classes the application expects; the one
    whose :func:`type_name` is ``error.type`` is made again, ``None`` if none
    is (a subclass is not its parent: list every class to rebuild). Its
    constructor is called with each parameter taken from the details by name,
    the first positional one that the details do not hold given the message;
    details the constructor did not set become attributes. A class whose
    constructor cannot be called that way (a parameter missing, or it
    raises) is made without calling it: ``args`` is ``(message,)`` and every
    detail is set as an attribute.

    >>> from statesaga import EventNotAllowed
    >>> stored = capture(EventNotAllowed("no event 'paid'", event="paid"), retryable=False)
    >>> rebuild(stored, known=[EventNotAllowed]).event
    'paid'
    >>> rebuild(stored, known=[KeyError]) is None
    True
    """
    cls = next((k for k in known if type_name(k) == error.type), None)
    if cls is None:
        return None
    instance = _construct(cls, error)
    if instance is None:
        instance = cls.__new__(cls)
        BaseException.__init__(instance, error.message)
        _set(instance, error.details, only_missing=False)
    else:
        _set(instance, error.details, only_missing=True)
    return instance


def _construct(cls: type[E], error: ErrorInfo) -> E | None:
    details = error.details
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):  # a builtin's: it takes the message
        parameters = [inspect.Parameter("message", inspect.Parameter.POSITIONAL_ONLY)]
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for index, parameter in enumerate(parameters):
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.name in details:
            value = details[parameter.name]
        elif index == 0 and parameter.kind in positional:
            value = error.message
        elif parameter.default is not inspect.Parameter.empty:
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                break  # later positional-only parameters cannot be given after a gap
            continue
        else:
            return None
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[parameter.name] = value
    try:
        return cls(*args, **kwargs)
    except Exception:
        return None


def _set(instance: BaseException, details: Mapping[str, Any], *, only_missing: bool) -> None:
    for name, value in details.items():
        if only_missing and hasattr(instance, name):
            continue
        try:
            object.__setattr__(instance, name, value)
        except (AttributeError, TypeError):  # a slot it does not have, or read-only
            continue


def encode(error: ErrorInfo) -> dict[str, Any]:
    """``error`` as the JSON object stored in the ``error`` columns."""
    return {
        "type": error.type,
        "message": error.message,
        "retryable": error.retryable,
        "step": error.step,
        "kind": error.kind.value,
        "details": dict(error.details),
    }


def decode(raw: Mapping[str, Any]) -> ErrorInfo:
    """The error info of a stored JSON object; written by any version of statesaga.

    >>> decode({"type": "DeadlinePassed", "message": "the run deadline passed",
    ...         "retryable": False, "step": None}).kind
    <ErrorKind.DEADLINE: 'deadline'>
    """
    type_ = str(raw.get("type", ""))
    details = raw.get("details")
    step = raw.get("step")
    try:
        kind = ErrorKind(str(raw.get("kind")))
    except ValueError:  # written before kinds were stored
        kind = _LEGACY_KINDS.get(type_, ErrorKind.STEP_ERROR)
    return ErrorInfo(
        type_,
        str(raw.get("message", "")),
        bool(raw.get("retryable", True)),
        None if step is None else str(step),
        kind=kind,
        details=dict(details) if isinstance(details, Mapping) else {},
    )
