"""(De)serialising inputs, context data, payloads and outputs with cattrs.

One converter (cattrs' JSON preset) turns attrs classes into JSON-ready
values and back. Structuring is the input validation: a value that does not
fit its type raises :class:`~statesaga.errors.InputError` naming where the
bad value sat.
"""

from __future__ import annotations

import json
from typing import Any

import cattrs
from cattrs.preconf.json import make_converter

from statesaga.errors import InputError

__all__ = ["converter", "dumps", "loads", "structure", "unstructure"]

converter = make_converter(forbid_extra_keys=True)


def structure(value: Any, type_: Any, *, what: str, saga: str | None = None) -> Any:
    """Structure ``value`` into ``type_``, or raise ``InputError`` saying what is wrong.

    A value that already is an instance of ``type_`` is taken as it is.

    >>> import attrs
    >>> @attrs.define
    ... class Cart:
    ...     cart_id: int
    >>> structure({"cart_id": 7}, Cart, what="input")
    Cart(cart_id=7)
    >>> try:
    ...     structure({"cart_id": "seven"}, Cart, what="input")
    ... except InputError as error:
    ...     print(error)
    input does not fit Cart: invalid value for type, expected int @ $.cart_id; pass a value of that shape
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
        raise InputError(
            f"{what} does not fit {_type_name(type_)}: {error}; pass a value of that shape",
            saga=saga,
        ) from error


def unstructure(value: Any, type_: Any = None) -> Any:
    """JSON-ready primitives for ``value`` (typed by ``type_`` when given)."""
    if type_ is None:
        return converter.unstructure(value)
    return converter.unstructure(value, type_)


def dumps(value: Any) -> str:
    """Compact JSON text for already unstructured primitives."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None) -> Any:
    """The inverse of :func:`dumps` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or repr(type_)


def _describe(error: BaseException) -> str:
    """Flatten cattrs' exception groups into ``message @ $.path`` parts."""
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error, path="$"))
    return str(error)
