"""The webhook racing the checkout: a held cart lock, many deliveries at once; never lost or 500.

Through a real server (uvicorn on 127.0.0.1) and concurrent httpx clients, on
SQLite and PostgreSQL, with entity locks in the store or in Redis. What the
sender cannot consume at once stays in the checkout's inbox, and a statesaga
worker (a thread here, a process in production) consumes it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from checkout_api import Api, Provider, backend, ok, serve

from definitions.checkout import Shop, cart_key
from definitions.checkout.http import create_app
from definitions.checkout.models import create_tables
from statesaga import Engine, Run, Status
from statesaga.locks import RedisLocks, SqlLocks
from statesaga.locks.base import Locks
from statesaga.store import SqlStore
from statesaga.testing import FakeClock
from statesaga.worker import Worker

__all__ = ["backend"]  # the fixture, imported for pytest

SETUPS = pytest.mark.parametrize(
    ("backend", "locks"),
    [("sqlite", "sql"), ("sqlite", "redis"), ("postgres", "none"), ("postgres", "redis")],
    indirect=["backend"],
)


@pytest.fixture
def shop_api(backend: str, locks: str, request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API over a shop on ``backend``, its entity locks in the store's table or Redis."""
    store = SqlStore(backend)
    entity_locks: Locks | None = None
    if locks == "sql":
        entity_locks = SqlLocks(store)
    elif locks == "redis":
        url = request.getfixturevalue("redis_url")
        entity_locks = RedisLocks(url, namespace=f"test:{uuid.uuid4().hex}:")
    clock = FakeClock.running()
    provider = Provider(clock)
    engine = Engine(store, locks=entity_locks, resources=[provider], clock=clock)
    create_tables(store.engine)
    with Shop(engine) as shop:
        app = create_app(shop, webhook_secret=provider.webhook_secret)
        try:
            with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
                yield Api(client, shop, provider, clock, url)
        finally:
            provider.close()


def settled(api: Api, checkout_id: str) -> Run:
    """The checkout once a worker has nothing left to do for it (bounded: 60 s)."""
    stop = threading.Event()
    worker = threading.Thread(
        target=Worker(api.shop.engine, poll_interval=0.05).run, args=(stop,), daemon=True
    )
    worker.start()
    try:
        for _ in range(1200):
            run = api.shop.checkout(checkout_id)
            if run.status.is_terminal:
                return run
            time.sleep(0.05)
        pytest.fail(f"checkout {checkout_id} still {run.status.value} in {run.state}")
    finally:
        stop.set()
        worker.join()


@SETUPS
def test_a_webhook_posted_while_the_carts_lock_is_held_is_200_and_the_checkout_completes(
    shop_api: Api,
) -> None:
    api = shop_api
    cart_id = api.cart(method="card_3ds")
    waiting = ok(api.complete(cart_id), 202)
    # the storefront retries `complete`, say: someone else holds the cart's lock for 2 s
    locks = api.shop.engine.locks
    if locks is not None:
        lease = locks.try_acquire(cart_key(cart_id), "storefront-retry", 2.0, api.clock())
        assert lease is not None
    held_retry = api.complete(cart_id)  # with store leases: the open run is in the way

    delivered = ok(api.deliver(api.provider.finish_action(waiting["provider_ref"])))

    assert held_retry.status_code == 409
    assert delivered["delivery"] in ("accepted", "pending")
    run = settled(api, waiting["checkout_id"])
    assert run.status is Status.COMPLETED
    assert len(api.shop.orders(cart_id)) == 1
    assert [p.status for p in api.shop.payments(cart_id)] == ["authorized"]


@SETUPS
def test_80_simultaneous_deliveries_of_one_webhook_are_all_200_and_order_once(
    shop_api: Api,
) -> None:
    api = shop_api
    cart_id = api.cart(method="card_3ds")
    waiting = ok(api.complete(cart_id), 202)
    delivery = api.provider.signed(api.provider.finish_action(waiting["provider_ref"]))
    barrier = threading.Barrier(80)
    limits = httpx.Limits(max_connections=80)

    with httpx.Client(base_url=api.url, timeout=120, limits=limits) as client:

        def deliver(_: int) -> httpx.Response:
            barrier.wait()
            return client.post("/payments/webhook", content=delivery.body, headers=delivery.headers)

        with ThreadPoolExecutor(80) as pool:
            responses = list(pool.map(deliver, range(80)))

    assert sorted({r.status_code for r in responses}) == [200], [
        r.text for r in responses if r.status_code != 200
    ]
    bodies = [r.json() for r in responses]
    assert sum(not body["duplicate"] for body in bodies) == 1  # recorded once
    run = settled(api, waiting["checkout_id"])
    assert run.status is Status.COMPLETED
    assert len(api.shop.orders(cart_id)) == 1
