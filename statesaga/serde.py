"""(De)serialising inputs, context data, payloads and outputs with cattrs, strictly.

One converter turns attrs classes (and dataclasses) into JSON-ready values
and back. Structuring is the input validation, and it does not coerce: a
``str`` field takes only a string, an ``int`` field only a whole number (not
``2.5``, not ``true``, not ``"2"``), a ``bool`` field only ``true``/``false``,
a list field only a list; the one widening allowed is an ``int`` where a
``float`` is declared. A value that does not fit raises
:class:`~statesaga.errors.InputError` naming the path of the bad value
(``$.traveller.name``), before anything is written.

Your own types (a ``Decimal``, a ``Money``) get converters of their own,
registered on :data:`converter` before the saga is defined:

>>> from decimal import Decimal
>>> converter.register_structure_hook(Decimal, structure_decimal)
>>> converter.register_unstructure_hook(Decimal, str)
>>> structure("9.99", Decimal, what="price")
Decimal('9.99')
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter
from cattrs.v import format_exception

from statesaga.errors import InputError

__all__ = [
    "converter",
    "dumps",
    "loads",
    "structure",
    "structure_decimal",
    "unstructure",
]


class WrongType(TypeError):
    """A value of the wrong JSON type where a typed field expected another."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {_got(value)}")


converter = make_converter(forbid_extra_keys=True)
"""The converter every input, context, payload and output goes through.

Register hooks for your own types on it (``converter.register_structure_hook``);
a hook should raise ``TypeError`` or ``ValueError`` for a value it refuses.
"""


def _strict_str(value: Any, type_: Any) -> Any:
    if not isinstance(value, str):
        raise WrongType("a string", value)
    return value if type_ is str else type_(value)


def _strict_int(value: Any, type_: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("a whole number", value)
    return value if type_ is int else type_(value)


def _strict_float(value: Any, type_: Any) -> Any:
    # an int is a float in JSON's eyes (``2`` for ``2.0``), and in Python's typing
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType("a number", value)
    return float(value) if type_ is float else type_(value)


def _strict_bool(value: Any, type_: Any) -> Any:
    if not isinstance(value, bool):
        raise WrongType("true or false", value)
    return value


converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)

_COLLECTIONS = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        collections.deque,
        typing.Sequence,
        typing.MutableSequence,
        typing.AbstractSet,
        typing.MutableSet,
        *(getattr(collections.abc, n) for n in ("Sequence", "MutableSequence", "Set")),
        collections.abc.MutableSet,
    }
)
_wrapping: set[Any] = set()  # types whose base hook is being built (see _wrapped)


def _is_collection(type_: Any) -> bool:
    return type_ not in _wrapping and (typing.get_origin(type_) or type_) in _COLLECTIONS


def _is_record(type_: Any) -> bool:
    return type_ not in _wrapping and (attrs.has(type_) or dataclasses.is_dataclass(type_))


def _wrapped(
    check: Callable[[Any, Any], None],
) -> Callable[[Any], Callable[[Any, Any], Any]]:
    """A hook factory: cattrs' own hook for the type, with ``check`` run first."""

    def factory(type_: Any) -> Callable[[Any, Any], Any]:
        _wrapping.add(type_)
        try:
            base = converter.get_structure_hook(type_, cache_result=False)
        finally:
            _wrapping.discard(type_)

        def hook(value: Any, cl: Any) -> Any:
            check(value, cl)
            return base(value, cl)

        return hook

    return factory


def _must_be_a_list(value: Any, type_: Any) -> None:
    # cattrs would iterate a string into its characters, or a mapping into its keys
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, typing.Iterable):
        raise WrongType("a list", value)


def _must_be_an_object(value: Any, type_: Any) -> None:
    if not isinstance(value, Mapping):
        raise WrongType(f"an object with the fields of {_type_name(type_)}", value)


converter.register_structure_hook_factory(_is_collection, _wrapped(_must_be_a_list))
converter.register_structure_hook_factory(_is_record, _wrapped(_must_be_an_object))


def structure_decimal(value: Any, type_: Any) -> decimal.Decimal:
    """A strict structure hook for ``Decimal``: from a string or a whole number, never a float.

    Register it if your types use ``Decimal`` (see the module's example).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WrongType("a decimal as a string", value)
    try:
        return decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise WrongType("a decimal as a string", value) from None


def structure(value: Any, type_: Any, *, what: str, saga: str | None = None) -> Any:
    """Structure ``value`` into ``type_``, or raise ``InputError`` naming the bad field.

    A value that already is an instance of ``type_`` is taken as it is.

    >>> import attrs
    >>> @attrs.define
    ... class Cart:
    ...     cart_id: int
    >>> structure({"cart_id": 7}, Cart, what="input")
    Cart(cart_id=7)
    >>> try:
    ...     structure({"cart_id": "7"}, Cart, what="input")
    ... except InputError as error:
    ...     print(error)
    input does not fit Cart: expected a whole number, got a string '7' @ $.cart_id; pass a value of that shape
    """
    if isinstance(type_, type) and isinstance(value, type_):
        return value
    try:
        return converter.structure(value, type_)
    except (cattrs.BaseValidationError, cattrs.StructureHandlerNotFoundError) as error:
        raise InputError(
            f"{what} does not fit {_type_name(type_)}: {_describe(error)}; "
            "pass a value of that shape",
            saga=saga,
        ) from error
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        reason = str(error) if isinstance(error, WrongType) else format_exception(error, type_)
        raise InputError(
            f"{what} does not fit {_type_name(type_)}: {reason} @ $; pass a value of that shape",
            saga=saga,
        ) from error


def unstructure(value: Any, type_: Any = None) -> Any:
    """JSON-ready primitives for ``value`` (typed by ``type_`` when given)."""
    if type_ is None:
        return converter.unstructure(value)
    return converter.unstructure(value, type_)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _encoder() -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":")).encode``, built once.

    The encoder makes a new C encoder on every call; made once here, what a
    transition pays for its JSON halves (values are unstructured primitives,
    so there is no cycle to watch for).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return json.JSONEncoder(separators=(",", ":")).encode
    ascii_strings = json.encoder.encode_basestring_ascii
    encode = make(None, _not_json, ascii_strings, None, ":", ",", False, False, True)
    join = "".join

    def encoded(value: Any) -> str:
        if isinstance(value, str):
            return ascii_strings(value)
        return join(encode(value, 0))

    return encoded


_encode = _encoder()


def dumps(value: Any) -> str:
    """Compact JSON text for already unstructured primitives: the one encoding of the store.

    >>> dumps({"sku": "mug", "available": 1})
    '{"sku":"mug","available":1}'
    """
    return _encode(value)


def loads(text: str | None) -> Any:
    """The inverse of :func:`dumps` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or repr(type_)


def _got(value: Any) -> str:
    """How a wrong value is shown in a message, in JSON's words: ``a number 2.5``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        kind = "a string"
    elif isinstance(value, int):
        kind = "a whole number"
    elif isinstance(value, float):
        kind = "a number"
    elif isinstance(value, Mapping):
        kind = "an object"
    elif isinstance(value, list | tuple):
        kind = "a list"
    else:
        kind = f"a {type(value).__name__}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _format(error: BaseException, type_: Any) -> str:
    return str(error) if isinstance(error, WrongType) else format_exception(error, type_)


def _describe(error: BaseException) -> str:
    """Flatten cattrs' exception groups into ``message @ $.path`` parts."""
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error, path="$", format_exception=_format))
    return str(error)
