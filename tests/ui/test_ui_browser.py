"""The web view in a real browser: Debian's Chromium, headless, through its chromedriver.

A person opens the saga page, goes to the runs, filters them, follows a link
to a compensated checkout and to a completed one, and reads what the pages
show: the diagram, the failed step and its error, the path taken. Nothing is
downloaded: Selenium is pointed at the system's chromedriver. Without Chromium
the tests skip, unless ``STATESAGA_REQUIRE_SERVICES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from definitions.checkout import CompleteCart
from definitions.checkout.screenshots import CHROMEDRIVER, CHROMIUM, Checkouts, browser, fill_shop
from statesaga.ui import create_app
from statesaga.ui.server import running

REQUIRE_SERVICES = os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1"


def _missing(what: str) -> None:
    message = f"{what}; install chromium and chromium-driver (apt-get) and selenium"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; STATESAGA_REQUIRE_SERVICES=1 makes this a failure")
    pytest.skip(message)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            _missing(f"{path} is not installed")
    with browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Checkouts]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui-browser') / 'shop.db'}"
    runs = fill_shop(url)
    with running(create_app(url, sagas=[CompleteCart])) as base:
        yield base, runs


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def click_link(driver: Any, text: str) -> None:
    """Follow a link, and wait until the browser is at the page it leads to."""
    from selenium.webdriver.common.by import By

    link = driver.find_element(By.LINK_TEXT, text)
    href = link.get_attribute("href")
    link.click()
    wait_for_url(driver, href)


def wait_for_url(driver: Any, part: str, seconds: float = 30.0) -> None:
    """Wait until the browser is at the page the last click asked for (its URL holds ``part``).

    ``seconds`` is a give-up, not a timing; a page mid-navigation may answer with an
    inspector error, which is waited out like the rest.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds, ignored_exceptions=(WebDriverException,)).until(
        lambda d: part in d.current_url
    )


def test_the_saga_page_shows_the_diagram_and_the_check_table(
    driver: Any, site: tuple[str, Checkouts]
) -> None:
    base, _ = site
    driver.get(base)
    assert driver.title == "Sagas · statesaga"
    click_link(driver, "complete-cart")
    assert driver.current_url == f"{base}/sagas/complete-cart"
    drawing = by_css(driver, "figure.diagram svg")
    assert drawing.is_displayed()
    assert drawing.size["width"] > 600
    assert drawing.size["height"] > 400
    labels = {node.text for node in all_css(driver, "figure.diagram svg text")}
    assert {"reserved", "awaiting_payment", "reserve.undo", "release_inventory"} <= labels, labels
    rows = [row.text for row in all_css(driver, "table.check tbody tr")]
    assert any(row.startswith("reserve validated reserved auto") for row in rows), rows


def test_a_filter_then_a_link_lead_to_the_compensated_checkout(
    driver: Any, site: tuple[str, Checkouts]
) -> None:
    from selenium.webdriver.support.ui import Select

    base, runs = site
    driver.get(base)
    click_link(driver, "Runs")
    assert len(all_css(driver, "table.runs tbody tr")) == 6
    Select(by_css(driver, "select[name=status]")).select_by_visible_text("compensated")
    by_css(driver, "form.filters button[type=submit]").click()
    wait_for_url(driver, "status=compensated")
    rows = all_css(driver, "table.runs tbody tr")
    assert len(rows) == 1
    assert "order-2000" in rows[0].text
    by_css(driver, "table.runs a.id").click()
    wait_for_url(driver, f"/runs/{runs.declined}")
    assert driver.current_url == f"{base}/runs/{runs.declined}"

    # what the person sees: the outcome, the error of the failed step, the path, the undo
    assert by_css(driver, "h1 .badge").text == "compensated"
    error = by_css(driver, "#run-error")
    assert error.is_displayed()
    assert "PaymentDeclined: the card was declined" in error.text
    assert "step authorize" in error.text
    failure = by_css(driver, "table.timeline tr.kind-failure")
    assert "authorize_payment" in failure.text
    assert "the card was declined" in failure.text
    undone = [row.text for row in all_css(driver, "table.timeline tr.kind-compensate")]
    assert [("cancel_payment" in t, "release_inventory" in t) for t in undone] == [
        (True, False),
        (False, True),
    ]
    overlay = " ".join(node.text for node in all_css(driver, "figure.diagram svg text"))
    assert "failed on try 1 (PaymentDeclined)" in overlay
    assert by_css(driver, "figure.diagram svg").is_displayed()


def test_a_completed_checkout_shows_its_output_and_links_back(
    driver: Any, site: tuple[str, Checkouts]
) -> None:
    base, runs = site
    driver.get(f"{base}/runs/{runs.completed}")
    assert by_css(driver, "h1 .badge").text == "completed"
    kinds = [kind.text for kind in all_css(driver, "table.timeline .kind")]
    assert kinds == ["start", "forward", "forward", "forward", "forward", "forward", "forward"]
    output = by_css(driver, "section.data div:last-child pre").text
    assert '"order_id": "' in output
    assert not all_css(driver, "meta[http-equiv=refresh]")
    # the correlation id links to the runs that share it
    click_link(driver, "order-1002")
    assert "correlation_id=order-1002" in driver.current_url
    assert [a.text for a in all_css(driver, "table.runs a.id")] == [runs.completed[:12]]


def test_an_unknown_run_reads_as_such(driver: Any, site: tuple[str, Checkouts]) -> None:
    base, _ = site
    driver.get(f"{base}/runs/does-not-exist")
    assert by_css(driver, "h1").text == "No such run"
    assert "There is no run with id 'does-not-exist'" in by_css(driver, ".detail").text


def test_the_screenshot_command_writes_the_three_pages(driver: Any, tmp_path: Path) -> None:
    from definitions.checkout.screenshots import main

    main(["--out", str(tmp_path)])
    for name in ("ui-sagas.png", "ui-runs.png", "ui-run.png"):
        image = (tmp_path / name).read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(image) > 20_000
