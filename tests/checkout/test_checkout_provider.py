"""The simulated provider as an HTTP service, its client, and the signatures of its webhooks.

The service runs for real: in a uvicorn thread on 127.0.0.1, and once as its
own process (``python -m definitions.checkout.provider``), stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from checkout_api import serve

from definitions.checkout import PaymentDeclined, PaymentRequest, SimulatedProvider
from definitions.checkout.provider import ProviderUnavailable
from definitions.checkout.provider_client import HttpProvider
from definitions.checkout.provider_service import create_provider_app
from definitions.checkout.signing import SIGNATURE_HEADER, SignatureError, sign, verify

ROOT = Path(__file__).resolve().parents[2]


def request(method: str, key: str = "k-1") -> PaymentRequest:
    return PaymentRequest(
        amount=2500, currency="EUR", payment_method=method, reference="cart-1", idempotency_key=key
    )


# -- signatures ----------------------------------------------------------------------------------


def test_a_signature_verifies_its_body_only_with_its_secret_and_in_its_window() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(body, "whsec_a", timestamp=1_000_000)

    verify(header, body, "whsec_a", now=1_000_000 + 299)
    verify(f"{header},v1=00ff", body, "whsec_a", now=1_000_000)  # one match is enough
    failures = []
    for args, now in (
        ((header, body + b" ", "whsec_a"), 1_000_000),
        ((header, body, "whsec_b"), 1_000_000),
        ((header, body, "whsec_a"), 1_000_000 + 301),
        ((header, body, "whsec_a"), 1_000_000 - 301),
        ((None, body, "whsec_a"), 1_000_000),
        (("t=1000000", body, "whsec_a"), 1_000_000),
    ):
        with pytest.raises(SignatureError) as raised:
            verify(*args, now=now)
        failures.append((raised.value.code, raised.value.status))

    assert failures == [
        ("invalid-signature", 401),
        ("invalid-signature", 401),
        ("stale-signature", 401),
        ("stale-signature", 401),
        ("missing-signature", 400),
        ("malformed-signature", 400),
    ]


def test_the_simulated_provider_signs_the_same_event_the_same_way() -> None:
    provider = SimulatedProvider(webhook_secret="whsec_test")
    authorization = provider.authorize(request("card_3ds"))
    event = provider.finish_action(authorization.provider_ref)

    delivery = provider.signed(event)

    assert provider.finish_action(authorization.provider_ref) == event  # a redelivery: same id
    verify(delivery.headers[SIGNATURE_HEADER], delivery.body, "whsec_test")
    assert provider.status(authorization.provider_ref) == "authorized"
    assert provider.status("pi_nothing") is None


# -- the service and its client ----------------------------------------------------------------


@pytest.fixture
def service() -> Iterator[tuple[SimulatedProvider, HttpProvider]]:
    provider = SimulatedProvider(webhook_secret="whsec_test", slow_seconds=0.1)
    try:
        with serve(create_provider_app(provider)) as url:
            client = HttpProvider(url)
            try:
                yield provider, client
            finally:
                client.close()
    finally:
        provider.close()


def test_the_client_authorizes_declines_cancels_and_reads_back(
    service: tuple[SimulatedProvider, HttpProvider],
) -> None:
    provider, client = service

    approved = client.authorize(request("card_ok", "k-ok"))
    again = client.authorize(request("card_ok", "k-ok"))
    waiting = client.authorize(request("card_3ds", "k-3ds"))
    with pytest.raises(PaymentDeclined, match="declined"):
        client.authorize(request("card_declined", "k-no"))
    with pytest.raises(ProviderUnavailable):
        client.authorize(request("card_flaky", "k-flaky"))
    canceled = client.cancel("k-ok")
    nothing = client.cancel("k-never")

    assert approved == again  # the same key, the same authorization
    assert approved.status == "authorized"
    assert client.status(waiting.provider_ref) == "requires_action"
    assert canceled is not None
    assert canceled.status == "canceled"
    assert client.status(approved.provider_ref) == "canceled"
    assert nothing is None
    assert client.status("pi_nobody/../x") is None
    assert [call.idempotency_key for call in provider.calls if call.operation == "cancel"] == [
        "k-ok",
        "k-never",
    ]


def test_the_action_endpoint_signs_the_webhook(
    service: tuple[SimulatedProvider, HttpProvider],
) -> None:
    _, client = service
    waiting = client.authorize(request("card_3ds"))

    with httpx.Client(base_url=client.base_url) as http:
        answer = http.post(f"/payments/{waiting.provider_ref}/action", json={"succeeded": True})
        unknown = http.post("/payments/pi_none/action", json={"succeeded": True})
        bad = http.post(f"/payments/{waiting.provider_ref}/action", json={"succeeded": "yes"})

    assert answer.status_code == 200
    body = answer.json()
    verify(body["headers"][SIGNATURE_HEADER], body["body"].encode(), "whsec_test")
    assert body["event"]["status"] == "succeeded"
    assert body["delivered"] is None  # no webhook URL: the caller posts it
    assert client.status(waiting.provider_ref) == "authorized"
    assert (unknown.status_code, bad.status_code) == (404, 422)


def test_an_unreachable_provider_is_unavailable_not_a_crash() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HttpProvider(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(ProviderUnavailable, match="did not answer"):
            client.authorize(request("card_ok"))
        with pytest.raises(ProviderUnavailable):
            client.status("pi_1")
    finally:
        client.close()


def test_python_m_definitions_checkout_provider_serves_it(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ = {**os.environ, "CHECKOUT_WEBHOOK_SECRET": "whsec_process"}
    log = (tmp_path / "provider.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "definitions.checkout.provider", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = HttpProvider(f"http://127.0.0.1:{port}", timeout=5)
    try:
        for _ in range(300):  # until it listens (or died)
            try:
                authorization = client.authorize(request("card_ok"))
                break
            except ProviderUnavailable:
                assert process.poll() is None, (tmp_path / "provider.log").read_text()
                time.sleep(0.05)
        else:
            pytest.fail("the provider service did not start")
        assert client.status(authorization.provider_ref) == "authorized"
    finally:
        client.close()
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_the_service_refuses_to_start_without_a_secret() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "CHECKOUT_WEBHOOK_SECRET"}
    finished = subprocess.run(
        [sys.executable, "-m", "definitions.checkout.provider", "--port", "1"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 2
    assert "CHECKOUT_WEBHOOK_SECRET" in finished.stderr
    assert "Traceback" not in finished.stderr
