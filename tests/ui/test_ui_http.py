"""The web view through a real server (uvicorn on 127.0.0.1) and an HTTP client.

A SQLite file is filled once with checkouts of the shop (completed, declined
and compensated, waiting for 3-D Secure, failed while compensating); each test
serves a view of it (read-only, or with an actions token) and reads the pages as
HTML. The browser tests (``test_ui_browser.py``) look at the same pages in Chromium.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from definitions.checkout import CompleteCart, SimulatedProvider
from definitions.checkout.screenshots import Checkouts, fill_shop
from statesaga import Engine, NonRetryableError, Saga, State, StateSagaError
from statesaga.store.sql import SqlStore
from statesaga.ui import create_app
from statesaga.ui.server import running

TOKEN = "correct-horse-battery"
SCRIPT = "<script>alert('owned')</script>"


@attrs.frozen
class Shop:
    url: str
    runs: Checkouts


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """One database of checkouts for the read-only tests of this module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'shop.db'}"
    return Shop(url, fill_shop(url))


@pytest.fixture
def fresh_shop(tmp_path: Path) -> Shop:
    """A database of checkouts of one test's own (for tests that change runs)."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    return Shop(url, fill_shop(url))


@contextmanager
def view(database: Any, **options: Any) -> Iterator[httpx.Client]:
    """A view of ``database`` served on a free port, and a client of it."""
    options.setdefault("sagas", [CompleteCart])
    with (
        running(create_app(database, **options)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@pytest.fixture
def client(shop: Shop) -> Iterator[httpx.Client]:
    """A read-only view of the module's shop."""
    with view(shop.url) as client:
        yield client


def text_of(page: httpx.Response) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded, spaces collapsed."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page.text, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def run_ids(page: httpx.Response) -> list[str]:
    return re.findall(r'href="/runs/([0-9a-f]{32})"', page.text)


# -- sagas ---------------------------------------------------------------------------------------


def test_the_sagas_page_lists_the_checkout_with_its_runs_by_status(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    seen = text_of(page)
    assert "complete-cart" in seen
    assert re.search(r"completed 3 .*compensated 1 .*failed 1", seen), seen
    assert 'href="/sagas/complete-cart"' in page.text


def test_a_saga_page_shows_its_diagram_check_table_and_versions(client: httpx.Client) -> None:
    page = client.get("/sagas/complete-cart")
    assert page.status_code == 200
    assert "<svg" in page.text
    assert "<?xml" not in page.text
    seen = text_of(page)
    # the check table, as `statesaga check` lists it
    assert (
        "reserve validated reserved auto reserve_inventory 3 tries, 1s x2 up to 1m "
        "release_inventory transactional" in seen
    )
    # a step's retries, its timeout and its undo on failure, as `statesaga check` shows them
    assert "authorize_payment 3 tries, 200ms x2 up to 2s 5s cancel_payment undo on failure" in seen
    assert "paid awaiting_payment authorized event payment_succeeded" in seen
    assert f"v1 {CompleteCart.definition.graph_hash}" in seen


def test_an_unknown_saga_is_a_404_that_names_the_registered_ones(client: httpx.Client) -> None:
    page = client.get("/sagas/refund")
    assert page.status_code == 404
    assert "saga 'refund' is not registered" in text_of(page)
    assert "Registered: complete-cart" in text_of(page)


# -- runs ----------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_links(client: httpx.Client, shop: Shop) -> None:
    page = client.get("/runs")
    assert page.status_code == 200
    ids = run_ids(page)
    assert len(ids) == 6
    assert ids[0] == shop.runs.failed  # started last
    assert (
        ids.index(shop.runs.waiting)
        < ids.index(shop.runs.declined)
        < ids.index(shop.runs.completed)
    )


def test_filters_pick_runs_by_status_correlation_id_key_and_time(client: httpx.Client) -> None:
    compensated = client.get("/runs", params={"status": "compensated"})
    assert len(run_ids(compensated)) == 1
    assert '<span class="badge compensated">' in compensated.text
    assert "order-2000" in text_of(compensated)
    by_correlation = client.get("/runs", params={"correlation_id": "order-1001"})
    assert len(run_ids(by_correlation)) == 1
    assert len(run_ids(client.get("/runs", params={"since": "1h"}))) == 6
    assert run_ids(client.get("/runs", params={"until": "1h"})) == []
    assert run_ids(client.get("/runs", params={"key": "cart:complete:nope"})) == []


def test_a_bad_filter_says_what_is_wrong_instead_of_failing(client: httpx.Client) -> None:
    page = client.get("/runs", params={"status": "stuck", "since": "yesterday-ish"})
    assert page.status_code == 400
    seen = text_of(page)
    assert "status 'stuck' is not one of running, waiting" in seen
    assert "'yesterday-ish' is not a time" in seen
    assert client.get("/runs", params={"before": "garbage"}).status_code == 400


def test_pages_follow_each_other_without_gaps_or_repeats(client: httpx.Client) -> None:
    everything = run_ids(client.get("/runs"))
    seen: list[str] = []
    page = client.get("/runs", params={"limit": 2})
    pages = 0
    while True:
        pages += 1
        seen += run_ids(page)
        older = re.search(r'href="([^"]+)">older', page.text)
        if older is None:
            break
        page = client.get(html.unescape(older.group(1)))
    assert seen == everything
    assert pages == 3


def test_a_failed_run_is_flagged_as_needing_a_look(client: httpx.Client, shop: Shop) -> None:
    page = client.get("/runs", params={"status": "failed"})
    assert "failed: needs a person" in text_of(page)
    assert 'class="stuck"' in page.text
    healthy = client.get("/runs", params={"status": "completed"})
    assert 'class="stuck"' not in healthy.text


# -- one run -------------------------------------------------------------------------------------


def test_a_completed_run_shows_its_path_timeline_and_data(client: httpx.Client, shop: Shop) -> None:
    page = client.get(f"/runs/{shop.runs.completed}")
    assert page.status_code == 200
    seen = text_of(page)
    assert "Completed: it reached the final state completed" in seen
    assert "<svg" in page.text
    assert f"run {shop.runs.completed}" in seen
    for step in ("validate_cart", "reserve_inventory", "authorize_payment", "complete_cart"):
        assert step in seen
    assert '"order_id": "' in text_of(page)  # the output, as JSON
    assert 'http-equiv="refresh"' not in page.text  # finished: nothing to refresh


def test_a_compensated_run_shows_the_failed_step_and_its_compensations(
    client: httpx.Client, shop: Shop
) -> None:
    page = client.get(f"/runs/{shop.runs.declined}")
    seen = text_of(page)
    assert "Compensated: it stopped in validated" in seen
    assert "definitions.checkout.errors.PaymentDeclined: the card was declined" in seen
    assert re.search(r"failure authorize authorize_payment reserved 1 [\d.]+ ms", seen), seen
    assert re.search(r"compensate reserve release_inventory reserved → validated", seen), seen


def test_a_run_shows_what_was_sent_to_it(client: httpx.Client, shop: Shop) -> None:
    # the failed checkout was cancelled by the customer: the cancel sits in its inbox
    page = client.get(f"/runs/{shop.runs.failed}")
    seen = text_of(page)
    assert "Inbox events and cancels sent to the run" in seen
    assert re.search(r"cancel .* accepted", seen), seen
    quiet = text_of(client.get(f"/runs/{shop.runs.completed}"))
    assert "Nothing was sent to this run." in quiet


def test_an_open_run_reloads_itself(client: httpx.Client, shop: Shop) -> None:
    page = client.get(f"/runs/{shop.runs.waiting}")
    assert '<meta http-equiv="refresh" content="5">' in page.text
    assert "Waiting in state awaiting_payment" in text_of(page)


def test_a_run_that_does_not_exist_is_a_clear_404(client: httpx.Client) -> None:
    page = client.get("/runs/0123456789abcdef")
    assert page.status_code == 404
    assert "There is no run with id '0123456789abcdef'" in text_of(page)
    other = client.get("/nowhere")
    assert other.status_code == 404
    assert "Nothing lives at /nowhere" in text_of(other)


# -- escaping and secrets ------------------------------------------------------------------------


@attrs.define
class Note:
    text: str


@attrs.define
class Nothing:
    pass


def shout(ctx: Any) -> Nothing:
    raise NonRetryableError(f"refused: {ctx.input.text}")


class Shout(Saga[Note, Nothing]):
    name = "shout"
    new = State(initial=True)
    done = State(final=True)
    say = new.to(done).run(shout, read_only=True)


def test_user_data_is_escaped_everywhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with Engine(url) as engine:
        run = engine.start(Shout, {"text": SCRIPT}, key=SCRIPT, correlation_id=SCRIPT)
    assert run.status.value == "compensated"
    with view(url, sagas=[Shout]) as client:
        pages = [
            client.get(f"/runs/{run.id}"),
            client.get("/runs"),
            client.get("/runs", params={"key": SCRIPT}),
            client.get("/sagas/shout"),
        ]
        for page in pages:
            assert page.status_code == 200
            assert "<script" not in page.text.lower()
        # it is there, as text: in the input, the error, the timeline and the drawing
        assert page.text.count("&lt;script&gt;") == 0  # the saga page holds no run data
        assert pages[0].text.count("&lt;script&gt;") >= 4
        assert f"refused: {SCRIPT}" in text_of(pages[0])


def test_no_page_shows_the_database_password() -> None:
    url = "postgresql+psycopg://shop:hunter2-secret@127.0.0.1:1/shop"
    with view(url) as client:
        page = client.get("/runs")
        assert page.status_code == 503
        assert "hunter2" not in page.text
        seen = text_of(page)
        assert "The database cannot be opened" in seen
        assert "postgresql+psycopg://shop:***@127.0.0.1:1/shop" in seen


def test_a_missing_sqlite_file_is_a_clear_page_and_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with view(f"sqlite:///{missing}") as client:
        page = client.get("/")
        assert page.status_code == 503
        assert f"there is no database file at {missing}" in text_of(page)
    assert not missing.exists()


def test_pages_forbid_scripts_and_framing(client: httpx.Client) -> None:
    headers = client.get("/").headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


# -- actions -------------------------------------------------------------------------------------


def history_kinds(url: str, run_id: str) -> list[str]:
    with Engine(url) as engine:
        return [entry.kind.value for entry in engine.history(run_id)]


def test_read_only_by_default_refuses_actions(fresh_shop: Shop) -> None:
    before = history_kinds(fresh_shop.url, fresh_shop.runs.waiting)
    with view(fresh_shop.url) as client:
        page = client.get(f"/runs/{fresh_shop.runs.waiting}")
        assert "Cancel…" not in page.text
        assert "read-only" in page.text
        confirm = client.get(f"/runs/{fresh_shop.runs.waiting}/cancel")
        assert confirm.status_code == 403
        refused = client.post(f"/runs/{fresh_shop.runs.waiting}/cancel", data={"token": TOKEN})
        assert refused.status_code == 403
        assert "This view is read-only" in text_of(refused)
    assert history_kinds(fresh_shop.url, fresh_shop.runs.waiting) == before


def test_a_wrong_token_changes_nothing(fresh_shop: Shop) -> None:
    before = history_kinds(fresh_shop.url, fresh_shop.runs.waiting)
    with view(fresh_shop.url, actions_token=TOKEN) as client:
        refused = client.post(f"/runs/{fresh_shop.runs.waiting}/cancel", data={"token": "guess"})
        assert refused.status_code == 403
        assert "The token given does not match" in text_of(refused)
    assert history_kinds(fresh_shop.url, fresh_shop.runs.waiting) == before


def test_cancel_asks_for_confirmation_and_is_recorded_in_history(fresh_shop: Shop) -> None:
    waiting = fresh_shop.runs.waiting
    options = {"actions_token": TOKEN, "resources": [SimulatedProvider()]}
    with view(fresh_shop.url, **options) as client:
        assert 'href="/runs/' + waiting + '/cancel"' in client.get(f"/runs/{waiting}").text
        confirm = client.get(f"/runs/{waiting}/cancel")
        assert confirm.status_code == 200
        assert 'type="password" name="token"' in confirm.text
        done = client.post(
            f"/runs/{waiting}/cancel",
            data={"token": TOKEN, "note": "customer called"},
            follow_redirects=True,
        )
        assert done.status_code == 200
        seen = text_of(done)
        assert "Cancel requested" in seen
        assert "Compensated" in seen
        assert "Cancelled: cancelled in the web view: customer called" in seen
    assert "cancel" in history_kinds(fresh_shop.url, waiting)


def test_retry_of_a_failed_run_is_recorded_and_a_refusal_explained(fresh_shop: Shop) -> None:
    failed = fresh_shop.runs.failed
    options = {"actions_token": TOKEN, "resources": [SimulatedProvider()]}
    with view(fresh_shop.url, **options) as client:
        done = client.post(f"/runs/{failed}/retry", data={"token": TOKEN}, follow_redirects=True)
        assert "Retry requested" in text_of(done)
        assert "Compensated" in text_of(done)  # the provider answers again: undone
        again = client.post(f"/runs/{failed}/retry", data={"token": TOKEN})
        assert again.status_code == 409
        assert "only a failed instance can be retried" in text_of(again)
    assert "resume" in history_kinds(fresh_shop.url, failed)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(StateSagaError, match="too short"):
        create_app("sqlite://", actions_token="1234")


# -- the store's reads behind the runs page, on every backend -------------------------------------


def test_pages_and_counts_come_from_the_store(db: str) -> None:
    with Engine(db) as engine:
        for number in range(5):
            engine.start(Shout, {"text": f"n{number}"}, key=f"k{number}")
        store = engine.store
        assert isinstance(store, SqlStore)
        everything = store.list_page(limit=100)
        assert [row.created_at for row in everything] == sorted(
            (row.created_at for row in everything), reverse=True
        )
        first = store.list_page(limit=2)
        last = first[-1]
        rest = store.list_page(limit=100, before=(last.created_at, last.id))
        assert [row.id for row in first + rest] == [row.id for row in everything]
        assert store.list_page(limit=10, entity_key="k3")[0].entity_key == "k3"
        assert store.count_by_status() == {("shout", 1, "compensated"): 5}
        assert store.count_by_status("other") == {}


def test_without_graphviz_the_diagram_is_mermaid_source_and_a_note(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statesaga.ui import drawing

    monkeypatch.setenv("PATH", "")  # no `dot` to be found
    drawing._cached_saga.cache_clear()
    try:
        page = client.get("/sagas/complete-cart")
    finally:
        drawing._cached_saga.cache_clear()
    assert page.status_code == 200
    assert "<svg" not in page.text
    seen = text_of(page)
    assert "Graphviz's dot is not installed here" in seen
    assert "stateDiagram-v2" in seen
    assert "reserve_inventory" in seen
