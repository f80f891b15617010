"""Webhook signatures: an HMAC-SHA256 of a timestamp and the raw body, with a shared secret.

The payment provider signs every delivery; the shop checks the signature
before it reads a single field. The header looks like Stripe's::

    Shop-Signature: t=1700000000,v1=5257a869e7...

``v1`` is the hex HMAC-SHA256, keyed with the shared secret, of
``f"{t}.".encode() + body``: signing the timestamp with the body makes a
captured delivery useless once it is older than the replay window (five
minutes by default), and comparing in constant time
(:func:`hmac.compare_digest`) leaks nothing about the expected value.

>>> header = sign(b'{"id": "evt_1"}', "whsec_test", timestamp=1_700_000_000)
>>> header[:13]
't=1700000000,'
>>> verify(header, b'{"id": "evt_1"}', "whsec_test", now=1_700_000_060)
>>> try:
...     verify(header, b'{"id": "evt_2"}', "whsec_test", now=1_700_000_060)
... except SignatureError as error:
...     (error.code, error.status)
('invalid-signature', 401)
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "SignatureError",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Shop-Signature"
"""The header that carries a delivery's signature."""

DEFAULT_TOLERANCE = 300.0
"""Seconds a signature stays valid either side of now (the replay window)."""

_MAX_HEADER = 1024


class SignatureError(Exception):
    """A delivery whose signature cannot be verified; ``code`` and ``status`` say why.

    ``missing-signature`` and ``malformed-signature`` are 400 (the sender is
    broken); ``invalid-signature`` and ``stale-signature`` are 401 (the sender
    is not who it claims to be, or the delivery is a replay).
    """

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The ``Shop-Signature`` header's value for ``body``, signed now (or at ``timestamp``)."""
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={_digest(body, secret, at)}"


def verify(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check that ``header`` signs ``body`` with ``secret``, within ``tolerance`` of now.

    Several ``v1`` values may be present (during a rotation of the secret):
    one match is enough.

    Raises:
        SignatureError: missing, malformed, not matching, or outside the window.
    """
    if header is None or not header.strip():
        raise SignatureError(
            "missing-signature",
            400,
            f"the delivery has no {SIGNATURE_HEADER} header: sign every webhook",
        )
    timestamp, candidates = _parse(header)
    at = time.time() if now is None else now
    if abs(at - timestamp) > tolerance:
        raise SignatureError(
            "stale-signature",
            401,
            f"the signature's timestamp is more than {tolerance:g} seconds from now: "
            "a replay, or a clock that is off",
        )
    expected = _digest(body, secret, timestamp)
    # every candidate is compared, so the time taken does not say which one matched
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    if not matched:
        raise SignatureError(
            "invalid-signature", 401, "the signature does not match the body and the secret"
        )


def _parse(header: str) -> tuple[int, list[str]]:
    malformed = SignatureError(
        "malformed-signature",
        400,
        f"the {SIGNATURE_HEADER} header is not of the form t=TIMESTAMP,v1=HEX",
    )
    if len(header) > _MAX_HEADER or not header.isascii():
        raise malformed
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals:
            raise malformed
        if name == "t":
            if not value.isdigit() or len(value) > 12 or timestamp is not None:
                raise malformed
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
        # other schemes (v0, ...) are ignored, as providers add them over time
    if timestamp is None or not candidates:
        raise malformed
    return timestamp, candidates
