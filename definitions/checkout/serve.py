"""Serving the checkout API: ``python -m definitions.checkout.http`` (one process of many).

The process reads statesaga's settings like ``Engine.from_settings`` and
``statesaga worker`` do (``STATESAGA_DATABASE_URL``, ``STATESAGA_SCHEMA``,
``STATESAGA_REDIS_URL``, ``statesaga.toml``...; ``--db``, ``--schema`` and
``--redis`` win), and two of the shop's own:

- ``CHECKOUT_PROVIDER_URL`` (or ``--provider-url``): the payment provider
  service (``python -m definitions.checkout.provider``) that every API process
  and worker shares. Without it the process has a simulated provider of its
  own, served under ``/provider`` (for one process on a laptop only: another
  process would not know its payments);
- ``CHECKOUT_WEBHOOK_SECRET`` (or ``--webhook-secret``): the secret the
  provider signs webhooks with (made up at random when the provider is the
  process's own).

``--workers 0`` leaves the timeouts, deadlines and retries to ``statesaga
worker`` processes; the default runs one worker thread in the process, so
that a single process is a complete shop.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import threading
from collections.abc import Sequence

from sqlalchemy.exc import NoResultFound
from starlette.routing import BaseRoute, Mount

from definitions.checkout.http import create_app
from definitions.checkout.provider import PaymentProvider, SimulatedProvider
from definitions.checkout.provider_client import PROVIDER_URL_ENV, HttpProvider
from definitions.checkout.provider_service import WEBHOOK_SECRET_ENV, create_provider_app
from definitions.checkout.shop import Shop

__all__ = ["main", "seed"]

_SEED_PRODUCTS = (("mug", "Enamel mug", 1250, 50), ("tea", "Loose-leaf tea", 899, 50))
_SEED_METHODS = ("card_ok", "card_3ds", "card_declined")


def seed(shop: Shop) -> list[str]:
    """Put the demo products on sale (where missing) and make one cart per payment method."""
    for sku, name, price, stock in _SEED_PRODUCTS:
        try:
            shop.stock(sku)
        except NoResultFound:
            shop.add_product(sku, name, unit_price=price, stock=stock)
    return [shop.create_cart({"mug": 1, "tea": 2}, payment_method=m) for m in _SEED_METHODS]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m definitions.checkout.http", description="Serve the checkout HTTP API."
    )
    parser.add_argument("--db", help="database URL (default: the database_url setting)")
    parser.add_argument("--schema", help="PostgreSQL schema (default: the schema setting)")
    parser.add_argument("--redis", help="Redis URL for entity locks (default: redis_url)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (%(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="requests running shop code at once; each may hold a database connection "
        "(%(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="statesaga worker threads in this process; 0 leaves timeouts and retries to "
        "`statesaga worker` processes (%(default)s)",
    )
    parser.add_argument(
        "--provider-url",
        default=os.environ.get(PROVIDER_URL_ENV),
        help=f"the payment provider service (default: ${PROVIDER_URL_ENV}; none: a simulated "
        "provider in this process, under /provider)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get(WEBHOOK_SECRET_ENV),
        help=f"the secret the provider signs webhooks with (default: ${WEBHOOK_SECRET_ENV})",
    )
    parser.add_argument("--seed", action="store_true", help="add demo products and carts")
    parser.add_argument(
        "--seed-only", action="store_true", help="add demo products and carts, then exit"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the API (see the module): ``python -m definitions.checkout.http [--port N]``."""
    import uvicorn

    from statesaga.errors import StateSagaError
    from statesaga.settings import Settings
    from statesaga.worker import Worker

    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads < 1 or args.workers < 0:
        parser.error("--threads must be at least 1 and --workers at least 0")
    own: SimulatedProvider | None = None
    provider: PaymentProvider
    if args.provider_url:
        if not args.webhook_secret and not args.seed_only:
            parser.error(f"set {WEBHOOK_SECRET_ENV} (or --webhook-secret): the provider's secret")
        provider, secret = HttpProvider(args.provider_url), args.webhook_secret or ""
    else:
        own = SimulatedProvider(webhook_secret=args.webhook_secret or secrets.token_hex(16))
        provider, secret = own, own.webhook_secret
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per provider call otherwise
    try:
        settings = Settings.load(database_url=args.db, schema=args.schema, redis_url=args.redis)
        shop = Shop.from_settings(settings, provider=provider)
    except StateSagaError as error:
        parser.exit(1, f"error: {error}\n")
    stop = threading.Event()
    with shop:
        if args.seed or args.seed_only:
            for cart_id, method in zip(seed(shop), _SEED_METHODS, strict=True):
                print(f"cart {cart_id} ({method}): POST /carts/{cart_id}/complete", flush=True)
            if args.seed_only:
                return
        mounts: tuple[BaseRoute, ...] = ()
        if own is not None:
            webhook = f"http://{args.host}:{args.port}/payments/webhook"
            mounts = (Mount("/provider", create_provider_app(own, [webhook])),)
        worker = None
        if args.workers:
            worker = threading.Thread(
                target=Worker(shop.engine, concurrency=args.workers).run, args=(stop,), daemon=True
            )
            worker.start()
        try:
            app = create_app(shop, webhook_secret=secret, threads=args.threads, mounts=mounts)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        finally:
            stop.set()
            if own is not None:
                own.close()
            if worker is not None:
                worker.join()
