"""The payment provider the checkout talks to, and a simulated one.

:class:`PaymentProvider` is what the saga needs: authorize an amount (keyed
by an idempotency key, so a retried call never authorizes twice) and cancel
an authorization (by the same key, tolerating one that never happened). The
engine hands the provider to the steps as a resource
(``Engine(..., resources=[provider])``).

:class:`SimulatedProvider` behaves like a real provider's test mode: the
payment method picks the outcome, as test card numbers do.

=====================  =====================================================
payment method         outcome
=====================  =====================================================
``card_ok``            approved
``card_declined``      declined (:class:`PaymentDeclined`, not retried)
``card_3ds``           requires action; :meth:`~SimulatedProvider.finish_action`
                       then makes the webhook (success or failure), which
                       :meth:`~SimulatedProvider.signed` signs for delivery
``card_slow``          answers after ``slow_seconds`` (past the step timeout)
``card_slow_once``     the first call is slow; a retry gets the answer at once
``card_flaky``         ``transient_failures`` calls fail with
                       :class:`ProviderUnavailable` (retried), then approved
=====================  =====================================================

Every call is recorded in :attr:`SimulatedProvider.calls` with its
idempotency key. Run as a program (``python -m definitions.checkout.provider
--port 8100``), the simulated provider is an HTTP service that every API
process and worker reaches through :class:`~definitions.checkout.provider_client.HttpProvider`
(see :mod:`definitions.checkout.provider_service`).

>>> provider = SimulatedProvider()
>>> request = PaymentRequest(amount=2500, currency="EUR", payment_method="card_ok",
...                          reference="cart-1", idempotency_key="k-1")
>>> first = provider.authorize(request)
>>> provider.authorize(request) == first       # the same key: the same authorization
True
>>> provider.cancel("k-1").status
'canceled'
>>> provider.authorize(request).status          # the key is spent: nothing is held again
'canceled'
>>> [(call.operation, call.idempotency_key) for call in provider.calls]
[('authorize', 'k-1'), ('authorize', 'k-1'), ('cancel', 'k-1'), ('authorize', 'k-1')]
"""

from __future__ import annotations

import abc
import json
import secrets
import threading
import uuid
from typing import Literal

import attrs

from definitions.checkout.errors import PaymentDeclined
from definitions.checkout.signing import SIGNATURE_HEADER, sign

__all__ = [
    "Authorization",
    "PaymentProvider",
    "PaymentRequest",
    "ProviderCall",
    "ProviderUnavailable",
    "SignedDelivery",
    "SimulatedProvider",
    "WebhookEvent",
]

AuthorizationStatus = Literal["authorized", "requires_action", "canceled", "failed"]


@attrs.frozen
class PaymentRequest:
    """What the shop asks the provider to authorize."""

    amount: int
    currency: str
    payment_method: str
    reference: str  # the cart id, echoed back in webhooks
    idempotency_key: str


@attrs.frozen
class Authorization:
    """The provider's answer: its reference for the payment and where it stands."""

    provider_ref: str
    status: AuthorizationStatus
    amount: int
    currency: str
    reference: str


@attrs.frozen
class WebhookEvent:
    """What the provider posts when a payment that required action is settled.

    ``id`` is the event's own id: every delivery of one event carries the same
    one, so the shop records it once however often it comes.
    """

    provider_ref: str
    reference: str
    status: Literal["succeeded", "failed"]
    id: str = attrs.field(factory=lambda: f"evt_{uuid.uuid4().hex[:16]}")

    def body(self) -> bytes:
        """The JSON body the provider posts."""
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()


@attrs.frozen
class SignedDelivery:
    """A webhook as it goes on the wire: the raw body and its headers (signature included)."""

    event: WebhookEvent
    body: bytes
    headers: dict[str, str]


@attrs.frozen
class ProviderCall:
    """One call the simulated provider received."""

    operation: Literal["authorize", "cancel"]
    idempotency_key: str
    payment_method: str | None
    amount: int | None
    result: str


class ProviderUnavailable(Exception):
    """A transient provider failure (a 503, a reset connection): the step retries."""


class PaymentProvider(abc.ABC):
    """What the checkout needs from a payment provider."""

    @abc.abstractmethod
    def authorize(self, request: PaymentRequest) -> Authorization:
        """Authorize ``request.amount``; the same idempotency key gives the same answer.

        Raises:
            PaymentDeclined: the provider declined the payment.
            ProviderUnavailable: a transient failure; try again with the same key.
        """

    @abc.abstractmethod
    def status(self, provider_ref: str) -> AuthorizationStatus | None:
        """Where the payment ``provider_ref`` stands at the provider; None when unknown there.

        The shop asks this before it records a webhook: a delivery says what the
        provider *says*, this is what the provider *holds*.

        Raises:
            ProviderUnavailable: a transient failure; ask again.
        """

    @abc.abstractmethod
    def cancel(self, idempotency_key: str) -> Authorization | None:
        """Cancel what was authorized under ``idempotency_key``; None when nothing was.

        Either way the key is spent: a later ``authorize`` under it (a late try from
        a process that paused past its lease) answers ``canceled`` and holds nothing.
        """


@attrs.define
class _Payment:
    authorization: Authorization
    method: str
    event: WebhookEvent | None = None


class SimulatedProvider(PaymentProvider):
    """An in-memory provider whose outcome the payment method decides (see the module).

    Args:
        slow_seconds: how long ``card_slow`` (and the first ``card_slow_once``) call takes.
        transient_failures: how many calls ``card_flaky`` fails before it approves.
        webhook_secret: the secret shared with the shop that signs webhooks
            (a random one by default: read it back from :attr:`webhook_secret`).
    """

    def __init__(
        self,
        *,
        slow_seconds: float = 8.0,
        transient_failures: int = 2,
        webhook_secret: str | None = None,
    ) -> None:
        self.slow_seconds = slow_seconds
        self.transient_failures = transient_failures
        self.webhook_secret = webhook_secret or f"whsec_{secrets.token_hex(16)}"
        self.calls: list[ProviderCall] = []
        self._payments: dict[str, _Payment] = {}  # by idempotency key
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def authorize(self, request: PaymentRequest) -> Authorization:
        method = request.payment_method
        key = request.idempotency_key
        with self._lock:
            first = key not in self._payments
            slow = method == "card_slow" or (method == "card_slow_once" and first)
            result = self._authorize(request)
            self.calls.append(ProviderCall("authorize", key, method, request.amount, result.status))
        if slow:
            # the provider did its work; the answer is what comes late
            self._closing.wait(self.slow_seconds)
        if isinstance(result, _Refusal):
            raise result.error
        return result

    def _authorize(self, request: PaymentRequest) -> Authorization | _Refusal:
        key = request.idempotency_key
        existing = self._payments.get(key)
        if existing is not None:
            return existing.authorization
        method = request.payment_method
        if method == "card_flaky":
            failed = self._failures.get(key, 0)
            if failed < self.transient_failures:
                self._failures[key] = failed + 1
                return _Refusal(
                    "unavailable",
                    ProviderUnavailable(f"the payment provider is unavailable (try {failed + 1})"),
                )
        if method == "card_declined":
            return _Refusal(
                "declined",
                PaymentDeclined(
                    f"the card was declined for {request.amount / 100:.2f} {request.currency}: "
                    "ask the customer for another payment method"
                ),
            )
        status: AuthorizationStatus = "requires_action" if method == "card_3ds" else "authorized"
        authorization = Authorization(
            provider_ref=f"pi_{uuid.uuid4().hex[:16]}",
            status=status,
            amount=request.amount,
            currency=request.currency,
            reference=request.reference,
        )
        self._payments[key] = _Payment(authorization, method)
        return authorization

    def cancel(self, idempotency_key: str) -> Authorization | None:
        with self._lock:
            payment = self._payments.get(idempotency_key)
            if payment is None:
                # void the key: a late authorize under it (from a process that paused past
                # its lease while the checkout was compensated) must not hold money
                self._payments[idempotency_key] = _Payment(
                    Authorization(f"pi_{uuid.uuid4().hex[:16]}", "canceled", 0, "", ""), "void"
                )
                self.calls.append(ProviderCall("cancel", idempotency_key, None, None, "none"))
                return None
            payment.authorization = attrs.evolve(payment.authorization, status="canceled")
            self.calls.append(
                ProviderCall("cancel", idempotency_key, payment.method, None, "canceled")
            )
            return payment.authorization

    def finish_action(self, provider_ref: str, *, succeeded: bool = True) -> WebhookEvent:
        """The customer completed (or abandoned) the required action: the webhook to post.

        The payment is settled once; asking again gives the same event (same id),
        as a provider's redelivery does.

        Raises:
            KeyError: no payment ``provider_ref`` here.
        """
        with self._lock:
            payment = self._by_ref(provider_ref)
            if payment.event is not None:
                return payment.event
            if payment.authorization.status == "requires_action":
                status: AuthorizationStatus = "authorized" if succeeded else "failed"
                payment.authorization = attrs.evolve(payment.authorization, status=status)
            payment.event = WebhookEvent(
                provider_ref,
                payment.authorization.reference,
                "succeeded" if succeeded else "failed",
            )
            return payment.event

    def signed(self, event: WebhookEvent, *, timestamp: int | None = None) -> SignedDelivery:
        """``event`` as the provider delivers it: its body, signed with :attr:`webhook_secret`."""
        body = event.body()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self.webhook_secret, timestamp=timestamp),
        }
        return SignedDelivery(event, body, headers)

    def status(self, provider_ref: str) -> AuthorizationStatus | None:
        """Where a payment stands at the provider (None: no such payment)."""
        with self._lock:
            try:
                return self._by_ref(provider_ref).authorization.status
            except KeyError:
                return None

    def payments(self) -> list[Authorization]:
        """Every payment the provider knows of, whatever its status."""
        with self._lock:
            return [p.authorization for p in self._payments.values()]

    def authorized(self) -> list[Authorization]:
        """Every payment the provider holds as authorized (money set aside for the shop)."""
        with self._lock:
            return [
                p.authorization
                for p in self._payments.values()
                if p.authorization.status == "authorized"
            ]

    def close(self) -> None:
        """Wake slow calls still sleeping (a test's or a server's shutdown)."""
        self._closing.set()

    def _by_ref(self, provider_ref: str) -> _Payment:
        for payment in self._payments.values():
            if payment.authorization.provider_ref == provider_ref:
                return payment
        raise KeyError(f"no payment {provider_ref!r} at the simulated provider")


@attrs.frozen
class _Refusal:
    result: str
    error: Exception

    @property
    def status(self) -> str:
        return self.result
