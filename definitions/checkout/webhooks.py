"""The provider's webhook, from a verified delivery to the checkout's inbox.

:func:`receive_webhook` is what :meth:`Shop.receive_webhook
<definitions.checkout.shop.Shop.receive_webhook>` does: read the payment's
status back from the provider, find the checkout the payment belongs to, and
hand it the event through its durable inbox, deduplicated by the event's id.
The signature is checked before (by the HTTP API, on the raw body).
"""

from __future__ import annotations

import attrs

from definitions.checkout.errors import PaymentNotSettled
from definitions.checkout.provider import PaymentProvider, WebhookEvent
from definitions.checkout.saga import CompleteCart, PaymentConfirmed
from statesaga import ErrorInfo, ErrorKind, Run
from statesaga.engine import Engine

__all__ = ["WebhookReceipt", "declined_by_customer", "payment_failed", "receive_webhook"]

#: the ``cause`` in the details of a checkout cancelled by a failed-payment webhook
PAYMENT_FAILED = "payment_failed"


@attrs.frozen
class WebhookReceipt:
    """What became of a webhook delivery.

    Attributes:
        status: ``accepted`` (the checkout took it), ``pending`` (kept until the
            checkout waits for it), ``rejected`` (the checkout had moved on or ended:
            ``reason`` says how) or ``ignored`` (no checkout of that cart).
        duplicate: this event id was delivered before; nothing new was recorded.
        run: the checkout, as it stands after the delivery.
    """

    event_id: str
    status: str
    reason: str | None
    duplicate: bool
    run: Run | None


def payment_failed(provider_ref: str | None) -> str:
    """Why a checkout is canceled when its payment's webhook reports a failure."""
    return f"payment {provider_ref} failed: the customer did not confirm it"


def declined_by_customer(error: ErrorInfo | None) -> bool:
    """The run was cancelled because its payment's webhook reported a failure (3-D Secure)."""
    return (
        error is not None
        and error.kind is ErrorKind.CANCELLED
        and error.details.get("cause") == PAYMENT_FAILED
    )


def receive_webhook(engine: Engine, event: WebhookEvent, *, key: str) -> WebhookReceipt:
    """Check ``event`` with the provider, then deliver it to the checkout of entity ``key``.

    Raises:
        PaymentNotSettled: the provider does not hold the payment as the event says.
    """
    _check_with_provider(engine.resources.get(PaymentProvider), event)
    run = _checkout_paid_by(engine, event, key)
    if run is None:
        return WebhookReceipt(event.id, "ignored", "no checkout of this cart", False, None)
    if event.status == "succeeded":
        delivery = engine.send(
            "payment_succeeded",
            PaymentConfirmed(event.provider_ref),
            instance_id=run.id,
            event_id=event.id,
        )
    else:
        delivery = engine.cancel(
            run.id,
            reason=payment_failed(event.provider_ref),
            details={"cause": PAYMENT_FAILED, "provider_ref": event.provider_ref},
            event_id=event.id,
        )
    return WebhookReceipt(
        event.id, delivery.status.value, delivery.reason, delivery.duplicate, delivery.run
    )


def _check_with_provider(provider: PaymentProvider, event: WebhookEvent) -> None:
    held = provider.status(event.provider_ref)
    # the statuses the provider may hold for a payment the webhook reports as settled;
    # "canceled": the checkout was compensated meanwhile (the webhook is late, not false)
    fits = ("authorized", "canceled") if event.status == "succeeded" else ("failed", "canceled")
    if held not in fits:
        raise PaymentNotSettled(
            f"the webhook says payment {event.provider_ref} {event.status}, but the "
            f"provider holds it as {held or 'unknown'}: nothing was recorded",
            cart_id=event.reference,
        )


def _checkout_paid_by(engine: Engine, event: WebhookEvent, key: str) -> Run | None:
    """The checkout of the webhook's cart that this payment belongs to."""
    runs = engine.list(saga=CompleteCart.name, key=key, limit=20)
    for run in runs:
        if run.data.provider_ref == event.provider_ref:
            return run
    # early: the provider answered the customer before the checkout recorded its answer
    open_runs = [r for r in runs if not r.status.is_terminal and r.data.provider_ref is None]
    return open_runs[0] if open_runs else None
