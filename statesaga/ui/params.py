"""Reading a page's query parameters and form fields, and the small words pages use."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request

from statesaga.core import Status

__all__ = [
    "STATUSES",
    "Problem",
    "by_status",
    "cursor",
    "form_fields",
    "linker",
    "past",
    "unavailable",
    "whole",
    "with_params",
]

STATUSES = tuple(status.value for status in Status)


class Problem(Exception):
    """A page that explains what went wrong and what to do, with its HTTP status."""

    def __init__(self, status: int, title: str, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.hint = status, title, detail, hint


def by_status(
    counts: dict[tuple[str, int, str], int], name: str, version: int | None = None
) -> dict[str, int]:
    found: dict[str, int] = {}
    for (saga, v, status), count in counts.items():
        if saga == name and (version is None or v == version):
            found[status] = found.get(status, 0) + count
    return {status: found[status] for status in STATUSES if status in found}


def whole(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise Problem(400, "Bad request", f"{name}={value!r} is not a whole number", "") from None


def cursor(value: str | None) -> tuple[float, str] | None:
    if not value:
        return None
    created_at, _, instance_id = value.partition(":")
    try:
        moment = float(created_at)
    except ValueError:
        moment = math.nan
    if not instance_id or not math.isfinite(moment):
        raise Problem(
            400,
            "Bad page link",
            f"before={value!r} is not a page cursor.",
            "Follow the Older link at the bottom of the runs page instead of typing it.",
        )
    return moment, instance_id


def with_params(request: Request, **changes: str | None) -> str:
    params = dict(request.query_params)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return f"{request.url.path}?{urlencode(params)}" if params else request.url.path


def past(action: str) -> str:
    """The action done: ``retried``, ``cancelled``, ``resolved``."""
    return {"retry": "retried", "cancel": "cancelled", "resolve": "resolved"}[action]


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (the confirmation forms send nothing else)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 16_384:
            raise Problem(413, "Form too large", "The form sent more than 16 KB.", "")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def linker(request: Request) -> Callable[..., str]:
    """``url_for`` for the templates: paths, not absolute URLs (they work behind a proxy)."""

    def url_for(route: str, /, **params: Any) -> str:
        return request.url_for(route, **params).path

    return url_for


def unavailable(detail: str) -> Problem:
    return Problem(
        503,
        "The database cannot be opened",
        detail,
        "Check the --db URL (and that the database server is up and reachable from here); "
        "this page tries again on every reload.",
    )
