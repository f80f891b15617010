"""What the checkout API takes from a request: ids and webhook bodies, checked strictly.

Every check raises :class:`~definitions.checkout.problems.RequestRejected`
naming the field at fault, before anything is read from or written to the
database. Nothing is coerced: ``null``, a number or an object where a string
belongs is refused, not turned into ``"None"`` or ``"42"``.

>>> checked_id("cart-1", "cart_id")
'cart-1'
>>> try:
...     checked_id("cart\\x00-1", "cart_id")
... except RequestRejected as error:
...     (error.status, error.field)
(422, 'cart_id')
>>> try:
...     webhook_event({"id": "evt_1", "provider_ref": None, "reference": "c", "status": "failed"})
... except RequestRejected as error:
...     (error.status, error.field, error.detail)
(422, 'provider_ref', 'provider_ref must be a string, not null')
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from definitions.checkout.problems import RequestRejected
from definitions.checkout.provider import WebhookEvent

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_WEBHOOK_BYTES",
    "checked_id",
    "json_body",
    "read_body",
    "webhook_event",
]

MAX_ID_LENGTH = 128
"""The longest id (cart, checkout, payment, event) the API takes."""

MAX_WEBHOOK_BYTES = 64 * 1024
"""A webhook body larger than this is refused (413) before it is parsed."""

_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number"}
_WEBHOOK_STATUSES = ("succeeded", "failed")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    for kind, name in _JSON_TYPES.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, float) else "a string"


def checked_id(value: object, field: str, *, code: str = "invalid-request") -> str:
    """``value`` if it is a usable id: a string of 1 to 128 printable characters."""
    if not isinstance(value, str):
        raise RequestRejected(
            code, f"{field} must be a string, not {_json_type(value)}", field=field
        )
    if not value:
        raise RequestRejected(code, f"{field} must not be empty", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise RequestRejected(
            code, f"{field} is longer than {MAX_ID_LENGTH} characters", field=field
        )
    if not value.isprintable():
        raise RequestRejected(
            code,
            f"{field} contains a control character (a NUL byte, a newline...): "
            "ids are printable text",
            field=field,
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise RequestRejected(code, f"{field} is not valid Unicode text", field=field) from None
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestRejected("payload-too-large", f"a body is at most {limit} bytes")
    return bytes(body)


def json_body(body: bytes, code: str) -> Any:
    """``body`` parsed as JSON (422 when it is not, nests too deeply, or holds a huge number)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestRejected(code, "the body nests too deeply: send a flat JSON object") from None
    except ValueError:
        # the parser's message quotes the body; the sender gets what to fix instead
        raise RequestRejected(
            code, "the body is not JSON (or holds a number too large to read)"
        ) from None


def webhook_event(payload: Any) -> WebhookEvent:
    """The webhook's fields, each checked: ``id``, ``provider_ref``, ``reference``, ``status``.

    Members the provider added that the shop does not know are ignored.
    """
    code = "invalid-webhook"
    if not isinstance(payload, dict):
        raise RequestRejected(
            code,
            f"the body is {_json_type(payload)}, not a webhook event: send an object with "
            "id, provider_ref, reference and status",
        )
    values: dict[str, str] = {}
    for field in ("id", "provider_ref", "reference", "status"):
        if field not in payload:
            raise RequestRejected(code, f"the webhook event has no {field}", field=field)
        values[field] = checked_id(payload[field], field, code=code)
    if values["status"] not in _WEBHOOK_STATUSES:
        raise RequestRejected(code, "status must be succeeded or failed", field="status")
    return WebhookEvent(
        provider_ref=values["provider_ref"],
        reference=values["reference"],
        status="succeeded" if values["status"] == "succeeded" else "failed",
        id=values["id"],
    )
