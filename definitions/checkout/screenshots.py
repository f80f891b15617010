"""Screenshots of the web view for the docs: ``python -m definitions.checkout.screenshots``.

It fills a SQLite file with checkouts of the shop (completed, declined and
compensated, waiting for 3-D Secure, and one whose compensation keeps failing),
serves the view on 127.0.0.1, and has headless Chromium (through Selenium and
the system's chromedriver) save the saga page, the runs page and a compensated
run's page as ``docs/img/ui-*.png``. The tests use the same pieces.

Needs the ``selenium`` package (the dev dependencies), ``chromium`` and
``chromium-driver`` (Debian), and Graphviz's ``dot``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from statesaga.errors import StateSagaError

__all__ = ["CHROMEDRIVER", "CHROMIUM", "Checkouts", "browser", "fill_shop", "main"]

CHROMIUM = os.environ.get("STATESAGA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STATESAGA_CHROMEDRIVER", "/usr/bin/chromedriver")


@attrs.frozen
class Checkouts:
    """The run ids of the checkouts :func:`fill_shop` made, by how they ended."""

    completed: str
    declined: str
    waiting: str
    failed: str


def fill_shop(url: str) -> Checkouts:
    """Checkouts of every kind in the database at ``url`` (the shop's tables created too)."""
    from definitions.checkout import PaymentDeclined, Shop, SimulatedProvider

    class CancelOutage(SimulatedProvider):
        """The provider cannot cancel payments: the compensation keeps failing."""

        def cancel(self, idempotency_key: str) -> Any:
            from definitions.checkout import ProviderUnavailable

            raise ProviderUnavailable("provider unreachable: connection reset by peer")

    provider = SimulatedProvider()
    with Shop.open(url, provider=provider) as shop:
        shop.add_product("mug", "Enamel mug", unit_price=1250, stock=50)
        shop.add_product("tea", "Loose-leaf tea, 100 g", unit_price=899, stock=50)
        for number in range(3):
            cart = shop.create_cart({"mug": 1 + number, "tea": 1})
            completed = shop.complete(cart, correlation_id=f"order-{1000 + number}")
        declined_cart = shop.create_cart({"tea": 3}, payment_method="card_declined")
        try:
            shop.complete(declined_cart, correlation_id="order-2000")
            raise StateSagaError("the declined card was accepted")
        except PaymentDeclined as error:
            declined = error.run
        waiting_cart = shop.create_cart({"mug": 1}, payment_method="card_3ds")
        waiting = shop.complete(waiting_cart, correlation_id="order-3000")
    broken = CancelOutage()
    with Shop.open(url, provider=broken, max_inline_sleep=10.0) as shop:
        stuck_cart = shop.create_cart({"tea": 1}, payment_method="card_3ds")
        stuck = shop.complete(stuck_cart, correlation_id="order-4000")
        assert stuck.checkout_id is not None
        failed = shop.engine.cancel(stuck.checkout_id, reason="customer abandoned 3-D Secure").run
    if completed.checkout_id is None or waiting.checkout_id is None or failed.status != "failed":
        raise StateSagaError(f"the checkouts did not end as planned ({failed.status})")
    return Checkouts(completed.checkout_id, declined.id, waiting.checkout_id, failed.id)


@contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Headless Chromium driven through the system's chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        raise StateSagaError(
            f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver "
            "(or point STATESAGA_CHROMIUM / STATESAGA_CHROMEDRIVER at them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _full_page(driver: Any, path: Path, width: int = 1400) -> None:
    """Save the whole page, as tall as it is, ``width`` CSS pixels wide."""
    metrics = {"width": width, "height": 700, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics["height"] = min(int(height), 6000)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.save_screenshot(str(path))


def main(argv: list[str] | None = None) -> None:
    """Write docs/img/ui-sagas.png, ui-runs.png and ui-run.png (``--out`` elsewhere)."""
    from definitions.checkout import CompleteCart
    from statesaga.ui.app import create_app
    from statesaga.ui.server import running

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="where to write")
    out = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'shop.db'}"
        runs = fill_shop(url)
        app = create_app(url, sagas=[CompleteCart])
        with running(app) as base, browser() as driver:
            shots = {
                "ui-sagas.png": f"{base}/sagas/complete-cart",
                "ui-runs.png": f"{base}/runs",
                "ui-run.png": f"{base}/runs/{runs.declined}",
            }
            for name, page in shots.items():
                driver.get(page)
                _full_page(driver, out / name)
                print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
