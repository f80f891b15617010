"""The checkout demo: a shop in the store's database, six scenarios.

It stocks a few products, then completes carts that succeed, are declined,
run out of stock, wait for a 3-D Secure webhook, and race each other, and
prints each checkout's path and outcome. No server is needed. Run it from a
clone of the repository::

    python -m definitions.checkout.demo [--db URL]

It works on the store the settings name (``sqlite:///statesaga.db`` unless
``--db`` or ``STATESAGA_DATABASE_URL`` says otherwise), the same one the
``statesaga`` command reads, so ``statesaga list`` shows the demo's runs.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from definitions.checkout.errors import CheckoutError, CheckoutInProgress, InsufficientStock
from definitions.checkout.models import InventoryItem
from definitions.checkout.provider import SimulatedProvider
from definitions.checkout.shop import CheckoutResult, Shop
from statesaga import Run

__all__ = ["Scenario", "main", "run_demo"]

# sku: (name, unit price in cents, units available at the start of the demo)
PRODUCTS = {
    "mug": ("Enamel mug", 1250, 20),
    "tea": ("Loose-leaf tea, 100 g", 899, 20),
    "kettle": ("Stovetop kettle", 4900, 1),
}


@attrs.frozen
class Scenario:
    """One line of the demo's table: what was tried and how it ended."""

    name: str
    status: str
    path: str
    outcome: str
    run: Run | None


def run_demo(database: str, console: Console) -> list[Scenario]:
    """Run every scenario against ``database``, print what each did, and return them."""
    provider = SimulatedProvider()
    scenarios: list[Scenario] = []
    with Shop.open(database, provider=provider) as shop:
        _stock_up(shop)

        def attempt(name: str, complete: Callable[[], CheckoutResult]) -> CheckoutResult | None:
            try:
                result = complete()
            except CheckoutError as error:
                scenarios.append(_failed(shop, name, error))
                return None
            scenarios.append(_succeeded(shop, name, result))
            return result

        cart = shop.create_cart({"mug": 2, "tea": 1})
        attempt("successful checkout", lambda: shop.complete(cart, correlation_id="demo-1"))
        attempt("the same cart again", lambda: shop.complete(cart, correlation_id="demo-1b"))
        declined = shop.create_cart({"tea": 3}, payment_method="card_declined")
        attempt("payment declined", lambda: shop.complete(declined, correlation_id="demo-2"))
        greedy = shop.create_cart({"mug": 1, "kettle": 2})
        attempt("out of stock", lambda: shop.complete(greedy, correlation_id="demo-3"))
        secure = shop.create_cart({"tea": 1}, payment_method="card_3ds")
        waiting = attempt(
            "3-D Secure: waits", lambda: shop.complete(secure, correlation_id="demo-4")
        )
        if waiting is not None and waiting.provider_ref is not None:
            run = shop.payment_webhook(provider.finish_action(waiting.provider_ref))
            scenarios.append(_from_run(shop, "3-D Secure: the webhook", run))
        _race(shop, provider, scenarios)
        _print(shop, scenarios, console)
    _write_diagrams(console)
    return scenarios


def _stock_up(shop: Shop) -> None:
    """Put the demo's products on sale, or top an earlier run's up to the same level."""
    with Session(shop.database) as session, session.begin():
        for sku, (name, price, available) in PRODUCTS.items():
            item = session.get(InventoryItem, sku)
            if item is None:
                session.add(
                    InventoryItem(
                        sku=sku,
                        name=name,
                        unit_price=price,
                        currency="EUR",
                        stocked=available,
                        reserved=0,
                    )
                )
            else:
                item.unit_price = price
                item.stocked = item.reserved + available


def _race(shop: Shop, provider: SimulatedProvider, scenarios: list[Scenario]) -> None:
    """Two requests complete one cart at once: one runs, the other is told it is in progress."""
    cart = shop.create_cart({"mug": 1}, payment_method="card_3ds")
    barrier = threading.Barrier(2)
    outcomes: list[CheckoutResult | CheckoutError] = []

    def complete(request: int) -> None:
        barrier.wait()
        try:
            outcomes.append(shop.complete(cart, correlation_id=f"demo-race-{request}"))
        except CheckoutError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=complete, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, CheckoutResult)]
    losers = [o for o in outcomes if isinstance(o, CheckoutInProgress)]
    if len(winners) != 1 or len(losers) != 1:  # the store's unique index makes this impossible
        raise AssertionError(f"two completes of one cart: expected one winner, got {outcomes}")
    scenarios.append(_failed(shop, "two completes at once: the loser", losers[0]))
    assert winners[0].provider_ref is not None
    run = shop.payment_webhook(provider.finish_action(winners[0].provider_ref))
    scenarios.append(_from_run(shop, "two completes at once: the winner", run))


def _succeeded(shop: Shop, name: str, result: CheckoutResult) -> Scenario:
    if result.already_completed and result.run is None:
        return Scenario(
            name, "completed", "(nothing ran)", f"existing order {result.order_id}", None
        )
    assert result.checkout_id is not None
    return _from_run(shop, name, shop.checkout(result.checkout_id))


def _failed(shop: Shop, name: str, error: CheckoutError) -> Scenario:
    outcome = f"{error.status} {error.title}"
    if isinstance(error, InsufficientStock):
        outcome += f": {error.available} {error.sku} left, {error.requested} wanted"
    if isinstance(error, CheckoutInProgress) or error.run is None:
        return Scenario(name, "rejected", "(nothing ran)", outcome, None)
    run = shop.checkout(error.run.id)
    return Scenario(name, run.status.value, _path(run), outcome, run)


def _from_run(shop: Shop, name: str, run: Run | None) -> Scenario:
    assert run is not None
    run = shop.checkout(run.id)
    if run.output is not None:
        receipt = run.output
        outcome = f"order {receipt.order_id}, {receipt.total / 100:.2f} {receipt.currency}"
    elif run.error is not None:
        outcome = f"compensated after {run.error.type.rsplit('.', 1)[-1]}: {run.error.message}"
    else:
        outcome = "202 waiting for the payment webhook"
    return Scenario(name, run.status.value, _path(run), outcome, run)


def _path(run: Run) -> str:
    """The states a run went through, from its history."""
    states: list[str] = []
    for entry in run.history:
        for state in (entry.from_state, entry.to_state):
            if not states or states[-1] != state:
                states.append(state)
    return " → ".join(states)


def _print(shop: Shop, scenarios: list[Scenario], console: Console) -> None:
    table = Table(title="checkout scenarios")
    for column in ("scenario", "status", "path", "outcome"):
        table.add_column(column)
    for scenario in scenarios:
        table.add_row(scenario.name, scenario.status, scenario.path, scenario.outcome)
    console.print(table)
    stock = Table(title="stock after the demo")
    for column in ("sku", "stocked", "reserved", "available"):
        stock.add_column(column)
    for sku in PRODUCTS:
        level = shop.stock(sku)
        stock.add_row(sku, str(level.stocked), str(level.reserved), str(level.available))
    console.print(stock)
    console.print(
        "Two completes of one cart: the second got 409 CheckoutInProgress (at most one open "
        "checkout per cart, enforced by the store); declined and out-of-stock carts left "
        "stock, payments and the cart as they were."
    )
    first = next(s.run for s in scenarios if s.run is not None)
    command = f"statesaga show {first.id}"
    if shop.database.url.render_as_string(hide_password=False) != _default_database():
        command += f" --db {shop.database.url}"
    console.print("Inspect a run:", highlight=False)
    console.print(f"  {command}", highlight=False, soft_wrap=True)


def _write_diagrams(console: Console) -> None:
    """Write the checkout's diagram beside the database: Mermaid always, SVG with Graphviz."""
    from definitions.checkout.saga import CompleteCart
    from statesaga.diagram import DiagramError, draw, from_definition

    drawing = from_definition(CompleteCart)
    Path("checkout.mmd").write_bytes(draw(drawing, "mermaid"))
    written = ["checkout.mmd"]
    try:
        Path("checkout.svg").write_bytes(draw(drawing, "svg"))
        written.append("checkout.svg")
    except DiagramError as error:  # no Graphviz `dot` on this machine: Mermaid it is
        console.print(f"(no SVG: {error})", highlight=False, markup=False)
    console.print(f"The checkout diagram: {', '.join(written)}")


def _default_database() -> str:
    """The store the settings name: the one the ``statesaga`` command reads by default."""
    from statesaga.settings import Settings

    return Settings.load().database_url


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m definitions.checkout.demo [--db URL]``."""
    parser = argparse.ArgumentParser(
        prog="python -m definitions.checkout.demo",
        description="Run the checkout demo: success, decline, out of stock, 3-D Secure, a race.",
    )
    parser.add_argument(
        "--db",
        help="SQLAlchemy URL of the store (default: the database_url setting, "
        "sqlite:///statesaga.db)",
    )
    arguments = parser.parse_args(argv)
    run_demo(arguments.db or _default_database(), Console())


if __name__ == "__main__":
    main()
