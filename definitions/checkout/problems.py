"""The checkout API's errors: RFC 9457 problem details with a stable code, for the storefront.

Every error body is ``application/problem+json`` with ``type`` (a URI
relative to the API, ``/problems/{code}``, that ``GET`` explains), ``code``
(the same name, stable: a storefront switches on it), ``title``, ``status``,
``detail`` (a sentence written for the storefront), ``instance`` and
``request_id``; and, where they apply, ``field`` (the request's part at fault),
``cart_id``, ``checkout_id``, ``checkout_status``, ``sku``, ``requested`` and
``available``. No body carries an exception's text, SQL or parameters: what
went wrong inside is in the log (under the request id) and in the run's
recorded error, for operators.

>>> PROBLEM_TYPES["invalid-request"].uri
'/problems/invalid-request'
>>> public_error(ErrorInfo("psycopg.errors.UniqueViolation", "INSERT INTO orders ..."), "failed")
{'code': 'checkout-failed', 'message': 'the checkout stopped halfway: quote its id to support'}
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse

from definitions.checkout import errors
from definitions.checkout.errors import CheckoutError
from definitions.checkout.webhooks import declined_by_customer
from statesaga import ErrorInfo, ErrorKind

__all__ = [
    "PROBLEM_TYPES",
    "ProblemResponse",
    "ProblemType",
    "RequestRejected",
    "checkout_problem",
    "problem",
    "public_error",
    "request_id",
    "request_id_of",
]


class ProblemResponse(JSONResponse):
    """An RFC 9457 problem details response."""

    media_type = "application/problem+json"


@attrs.frozen
class ProblemType:
    """A kind of problem the API answers with; ``GET /problems/{name}`` shows it."""

    name: str
    title: str
    status: int
    description: str

    @property
    def uri(self) -> str:
        """The problem's ``type``: a URI relative to the API."""
        return f"/problems/{self.name}"


def slug(kind: type[CheckoutError]) -> str:
    """``InsufficientStock`` -> ``insufficient-stock``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", kind.__name__).lower()


CHECKOUT_ERRORS = (
    errors.CartNotFound,
    errors.CheckoutInProgress,
    errors.InvalidCart,
    errors.InsufficientStock,
    errors.PaymentDeclined,
    errors.PaymentNotSettled,
    errors.CheckoutTimedOut,
    errors.CheckoutFailed,
)

_OWN_TYPES = (
    ProblemType("checkout-not-found", "checkout not found", 404, "No checkout with that id."),
    ProblemType(
        "invalid-request",
        "invalid request",
        422,
        "A part of the request (named by `field`) is not acceptable: an id must be 1 to 128 "
        "printable characters; a body must be a JSON object of the documented fields, each "
        "of its documented type.",
    ),
    ProblemType(
        "invalid-webhook",
        "invalid webhook",
        422,
        "The body is not JSON, or not a webhook event: an object with id, provider_ref, "
        "reference (the cart id) and status (succeeded or failed), all strings.",
    ),
    ProblemType(
        "missing-signature",
        "missing signature",
        400,
        "The webhook has no Shop-Signature header: every delivery must be signed.",
    ),
    ProblemType(
        "malformed-signature",
        "malformed signature",
        400,
        "The Shop-Signature header is not of the form t=TIMESTAMP,v1=HEX.",
    ),
    ProblemType(
        "invalid-signature",
        "invalid signature",
        401,
        "The signature does not match the body under the shared secret.",
    ),
    ProblemType(
        "stale-signature",
        "stale signature",
        401,
        "The signature's timestamp is outside the replay window: a replayed delivery, or a "
        "sender whose clock is off.",
    ),
    ProblemType(
        "payload-too-large", "payload too large", 413, "The body is larger than the API takes."
    ),
    ProblemType(
        "service-unavailable",
        "service unavailable",
        503,
        "The shop's database, locks or payment provider cannot be reached just now: nothing "
        "was changed; try again after Retry-After seconds.",
    ),
)

PROBLEM_TYPES: dict[str, ProblemType] = {
    problem.name: problem
    for problem in (
        *(
            ProblemType(slug(kind), kind.title, kind.status, " ".join(kind.__doc__.split()))
            for kind in CHECKOUT_ERRORS
            if kind.__doc__
        ),
        *_OWN_TYPES,
    )
}
"""The problem types of the API's error bodies, by name (the ``code``)."""


class RequestRejected(Exception):
    """A request the API cannot take as it is: answered as the problem ``code``.

    ``status`` defaults to the problem type's; ``field`` names the request's part at fault.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = PROBLEM_TYPES[code]
        self.detail = detail
        self.field = field
        self.status = status or self.problem.status
        self.headers = headers or {}


# -- request ids -------------------------------------------------------------------------------

_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces


def request_id(header: str | None) -> str:
    """The caller's request id when it is usable, else a new one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def request_id_of(request: Request) -> str:
    """The request id the middleware gave ``request``."""
    return str(request.scope.get("state", {}).get("request_id", ""))


# -- bodies ------------------------------------------------------------------------------------


def problem(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """A problem response; ``code`` names one of :data:`PROBLEM_TYPES` (else ``about:blank``)."""
    body: dict[str, Any] = {
        "type": "about:blank" if code is None else PROBLEM_TYPES[code].uri,
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id_of(request),
    }
    body.update((name, value) for name, value in extensions.items() if value is not None)
    return ProblemResponse(body, status_code=status, headers=headers)


def rejected(request: Request, error: RequestRejected) -> ProblemResponse:
    """The problem response for ``error``."""
    return problem(
        request,
        error.status,
        error.problem.title,
        error.detail,
        code=error.problem.name,
        headers=error.headers,
        field=error.field,
    )


_STOREFRONT = {
    "checkout-timed-out": "the checkout did not finish in time; everything it did was undone: "
    "the customer may try again",
    "payment-failed": "the customer did not confirm the payment; everything was undone",
    "checkout-canceled": "the checkout was canceled; everything it did was undone",
}


def public_error(error: ErrorInfo | None, status: str) -> dict[str, str] | None:
    """What the storefront may see of a run's recorded ``error``: a stable code and a message.

    The shop's own business errors keep their message (written for customers);
    anything else (a library's, a driver's, a bug's) becomes a code and a fixed
    sentence, so that no exception text, SQL or parameter leaves the shop.
    """
    if error is None:
        return None
    own = errors.step_error(error)
    if own is not None:
        return {"code": slug(problem_kind(own)), "message": error.message}
    if error.kind.is_timeout:
        return {"code": "checkout-timed-out", "message": _STOREFRONT["checkout-timed-out"]}
    if error.kind is ErrorKind.CANCELLED:
        code = "payment-failed" if declined_by_customer(error) else "checkout-canceled"
        return {"code": code, "message": _STOREFRONT[code]}
    return {"code": "checkout-failed", "message": _failed(status)}


def _failed(status: str) -> str:
    if status == "failed":
        return "the checkout stopped halfway: quote its id to support"
    return "the checkout could not be completed; everything it did was undone"


def problem_kind(error: CheckoutError) -> type[CheckoutError]:
    """The problem type ``error`` is answered as: a subclass without a type of its own
    (``CartAlreadyCompleted``) reads as its parent."""
    return next((k for k in type(error).__mro__ if k in CHECKOUT_ERRORS), errors.CheckoutFailed)


def checkout_problem(request: Request, error: CheckoutError) -> ProblemResponse:
    """The problem response for a checkout's business error."""
    kind = problem_kind(error)
    run = error.run
    if isinstance(error, errors.CheckoutTimedOut):
        detail = _STOREFRONT["checkout-timed-out"]
    elif error.status >= 500:
        # the run records what went wrong; the client gets where to look, not internals
        detail = (
            f"the checkout of cart {error.cart_id!r} failed"
            + (f" (checkout {run.id}, {run.status.value})" if run is not None else "")
            + ": quote the request id when you report it"
        )
    else:
        detail = str(error)
    extensions: dict[str, Any] = {
        "cart_id": error.cart_id,
        "checkout_id": None if run is None else run.id,
        "checkout_status": None if run is None else run.status.value,
    }
    if isinstance(error, errors.InsufficientStock):
        extensions.update(sku=error.sku, requested=error.requested, available=error.available)
    return problem(request, error.status, error.title, detail, code=slug(kind), **extensions)
