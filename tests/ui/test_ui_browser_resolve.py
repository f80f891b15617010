"""Resolving a failed checkout in a real browser (Debian's Chromium, headless).

An operator on call opens the failed checkout, chooses Resolve, is asked for
the token, the outcome and a note (the browser will not send the form without
them), confirms, and reads the run as it now stands: compensated, the note in
its history. Skips without Chromium, unless ``STATESAGA_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import _missing, all_css, by_css, click_link, wait_for_url

from definitions.checkout import CompleteCart
from definitions.checkout.screenshots import CHROMEDRIVER, CHROMIUM, browser, fill_shop
from statesaga import Engine
from statesaga.ui import create_app
from statesaga.ui.server import running

TOKEN = "correct-horse-battery"


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


def test_an_operator_resolves_a_failed_checkout(driver: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    runs = fill_shop(url)
    with running(create_app(url, sagas=[CompleteCart], actions_token=TOKEN)) as base:
        driver.get(f"{base}/runs/{runs.failed}")
        assert by_css(driver, "h1 .badge").text == "failed"
        click_link(driver, "Resolve…")
        assert driver.current_url == f"{base}/runs/{runs.failed}/resolve"
        assert "Resolve run" in by_css(driver, "h1").text

        # without a note the browser does not send the form: nothing changes
        by_css(driver, "input[name=token]").send_keys(TOKEN)
        by_css(driver, "input[name=outcome][value=compensated]").click()
        assert all_css(driver, "input[name=note]:invalid")  # required, and empty
        by_css(driver, "form.confirm button[type=submit]").click()
        assert driver.current_url == f"{base}/runs/{runs.failed}/resolve"
        assert not all_css(driver, "input[name=token]:invalid")

        by_css(driver, "input[name=note]").send_keys("cancelled the payment at the provider")
        by_css(driver, "form.confirm button[type=submit]").click()
        # the form is sent, then the run's page replaces it
        wait_for_url(driver, "done=resolve")

        assert driver.current_url == f"{base}/runs/{runs.failed}?done=resolve"
        assert by_css(driver, "h1 .badge").text == "compensated"
        assert "Resolved: it is recorded in the history below" in by_css(driver, ".done-box").text
        resolved = all_css(driver, "table.timeline tr.kind-resolved")
        assert len(resolved) == 1
        assert "cancelled the payment at the provider" in resolved[0].text
        assert "by the web view" in resolved[0].text
        assert "Resolve…" not in by_css(driver, ".actions").text
    with Engine(url) as engine:
        last = engine.history(runs.failed)[-1]
    assert (last.kind.value, last.note) == ("resolved", "cancelled the payment at the provider")
