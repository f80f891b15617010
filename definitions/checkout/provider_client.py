"""``HttpProvider``: the :class:`PaymentProvider` the shop's processes use to reach the provider.

Every API process and worker gets one as a resource (see
:func:`definitions.checkout.resources`, which builds it from
``CHECKOUT_PROVIDER_URL``), so they all share the provider's payments.

>>> provider = HttpProvider("http://127.0.0.1:8100")
>>> provider.base_url
'http://127.0.0.1:8100'
>>> provider.close()
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import cattrs
import httpx

from definitions.checkout.errors import PaymentDeclined
from definitions.checkout.provider import (
    Authorization,
    AuthorizationStatus,
    PaymentProvider,
    PaymentRequest,
    ProviderUnavailable,
)

__all__ = ["PROVIDER_URL_ENV", "HttpProvider"]

PROVIDER_URL_ENV = "CHECKOUT_PROVIDER_URL"
"""The environment variable naming the provider service, e.g. ``http://127.0.0.1:8100``."""

_STATUSES = ("authorized", "requires_action", "canceled", "failed")


class HttpProvider(PaymentProvider):
    """The payment provider service, over HTTP (``python -m definitions.checkout.provider``).

    Transport failures, timeouts and 5xx answers are :class:`ProviderUnavailable`
    (the step retries under the same idempotency key); a 402 is
    :class:`PaymentDeclined`.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8100``.
        timeout: seconds to wait for an answer.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        )

    def authorize(self, request: PaymentRequest) -> Authorization:
        response = self._call("POST", "/authorize", json=cattrs.unstructure(request))
        if response.status_code == 402:
            raise PaymentDeclined(self._message(response))
        return self._authorization(self._ok(response).json())

    def cancel(self, idempotency_key: str) -> Authorization | None:
        response = self._call("POST", "/cancel", json={"idempotency_key": idempotency_key})
        found = self._ok(response).json()["authorization"]
        return None if found is None else self._authorization(found)

    def status(self, provider_ref: str) -> AuthorizationStatus | None:
        response = self._call("GET", f"/payments/{quote(provider_ref, safe='')}")
        if response.status_code == 404:
            return None
        status = self._ok(response).json()["status"]
        if status not in _STATUSES:
            raise ProviderUnavailable(f"the provider answered an unknown status {status!r}")
        result: AuthorizationStatus = status
        return result

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **options)
        except httpx.HTTPError as error:
            raise ProviderUnavailable(
                f"the payment provider at {self.base_url} did not answer "
                f"({type(error).__name__}): try again"
            ) from error

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 500:
            raise ProviderUnavailable(
                f"the payment provider answered {response.status_code}: {self._message(response)}"
            )
        if not response.is_success:
            raise RuntimeError(
                f"the payment provider refused the request ({response.status_code}): "
                f"{self._message(response)}"
            )
        return response

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            return str(response.json()["message"])
        except (ValueError, KeyError, TypeError):
            return response.reason_phrase

    @staticmethod
    def _authorization(body: Any) -> Authorization:
        try:
            return cattrs.structure(body, Authorization)
        except (cattrs.BaseValidationError, TypeError, ValueError) as error:
            raise ProviderUnavailable(
                "the payment provider's answer is not an authorization"
            ) from error
