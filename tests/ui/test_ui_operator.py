"""The web view's resolve action and its diff of a saga against a git revision, over HTTP.

A real server (uvicorn on 127.0.0.1) and an HTTP client, as in ``test_ui_http``:
resolve is off unless the view has an actions token, asks for a confirmation,
needs a note, and is recorded in the run's history; the diff page draws what
changed in a saga since a revision of a real git repository, and says so
clearly when the revision or the file is not there.
"""

from __future__ import annotations

import html
import importlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from definitions.checkout import CompleteCart
from definitions.checkout.screenshots import Checkouts, fill_shop
from statesaga import Engine
from statesaga.ui import create_app
from statesaga.ui.server import running

TOKEN = "correct-horse-battery"
SCRIPT = "<script>alert('owned')</script>"


@contextmanager
def view(database: Any, **options: Any) -> Iterator[httpx.Client]:
    options.setdefault("sagas", [CompleteCart])
    with (
        running(create_app(database, **options)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def text_of(page: httpx.Response) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page.text, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.fixture
def shop(tmp_path: Path) -> tuple[str, Checkouts]:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    return url, fill_shop(url)


def history(url: str, run_id: str) -> list[Any]:
    with Engine(url) as engine:
        return engine.history(run_id)


# -- resolve ----------------------------------------------------------------------------------


def test_resolve_is_off_in_a_read_only_view(shop: tuple[str, Checkouts]) -> None:
    url, runs = shop
    before = history(url, runs.failed)
    with view(url) as client:
        assert "Resolve…" not in client.get(f"/runs/{runs.failed}").text
        assert client.get(f"/runs/{runs.failed}/resolve").status_code == 403
        refused = client.post(
            f"/runs/{runs.failed}/resolve",
            data={"token": TOKEN, "outcome": "compensated", "note": "by hand"},
        )
        assert refused.status_code == 403
        assert "retry, cancel and resolve are turned off" in text_of(refused)
    assert history(url, runs.failed) == before


def test_resolve_asks_for_an_outcome_and_a_note_and_records_them(
    shop: tuple[str, Checkouts],
) -> None:
    url, runs = shop
    failed = runs.failed
    with view(url, actions_token=TOKEN) as client:
        page = client.get(f"/runs/{failed}")
        assert f'href="/runs/{failed}/resolve"' in page.text
        confirm = client.get(f"/runs/{failed}/resolve")
        assert confirm.status_code == 200
        assert 'name="outcome" value="compensated" required' in confirm.text
        assert re.search(r'<input name="note"[^>]* required', confirm.text)
        assert "nothing runs and nothing is compensated" in text_of(confirm)

        before = history(url, failed)
        wrong = client.post(
            f"/runs/{failed}/resolve",
            data={"token": "guess-guess", "outcome": "compensated", "note": "x"},
        )
        assert wrong.status_code == 403
        blank = client.post(
            f"/runs/{failed}/resolve", data={"token": TOKEN, "outcome": "compensated", "note": " "}
        )
        assert blank.status_code == 409
        assert "a note is required" in text_of(blank)
        no_outcome = client.post(f"/runs/{failed}/resolve", data={"token": TOKEN, "note": "x"})
        assert no_outcome.status_code == 409
        assert "pass compensated or completed" in text_of(no_outcome)
        assert history(url, failed) == before  # nothing was written

        note = f"cancelled payment by hand {SCRIPT}"
        done = client.post(
            f"/runs/{failed}/resolve",
            data={"token": TOKEN, "outcome": "compensated", "note": note},
            follow_redirects=True,
        )
        assert done.status_code == 200
        seen = text_of(done)
        assert "Resolved: it is recorded in the history below" in seen
        assert f"{note} by the web view" in seen
        assert SCRIPT not in done.text  # the note is user data: escaped

        again = client.post(
            f"/runs/{failed}/resolve", data={"token": TOKEN, "outcome": "completed", "note": "x"}
        )
        assert again.status_code == 409
        assert "only a failed run can be resolved" in text_of(again)
    last = history(url, failed)[-1]
    assert (last.kind.value, last.note, last.by) == ("resolved", note, "the web view")


# -- the diff against a git revision ----------------------------------------------------------

V1 = """
import attrs

from statesaga import Saga, State


@attrs.frozen
class Cart:
    cart_id: str


@attrs.frozen
class Progress:
    done: bool = False


def reserve_inventory(ctx): ...
def release_inventory(ctx): ...
def create_order(ctx): ...


class Checkout(Saga[Cart, Progress]):
    name = "checkout"
    new = State(initial=True)
    reserved = State()
    ordered = State(final=True)
    reserve = new.to(reserved).run(reserve_inventory, undo=release_inventory)
    order = reserved.to(ordered).run(create_order, pivot=True)
"""

V2 = V1.replace(
    "    reserved = State()\n", "    reserved = State()\n    screened = State()\n"
).replace(
    "    order = reserved.to(ordered)",
    "    screen = reserved.to(screened).run(create_order, read_only=True)\n"
    "    order = screened.to(ordered)",
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def changed_saga(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """A saga class loaded from a git work tree: committed as V1, then as V2."""
    package = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    saga_file = tmp_path / package / "checkout.py"
    saga_file.write_text(V1)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "--no-gpg-sign", "-m", "v1")
    saga_file.write_text(V2)
    git(tmp_path, "commit", "-q", "--no-gpg-sign", "-am", "v2")
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(f"{package}.checkout").Checkout  # type: ignore[no-any-return]


def test_the_saga_page_links_to_what_changed_since_a_revision(changed_saga: type) -> None:
    with view("sqlite://", sagas=[changed_saga]) as client:
        saga = client.get("/sagas/checkout")
        assert 'action="/sagas/checkout/diff"' in saga.text
        assert 'name="against" value="HEAD~1"' in saga.text

        page = client.get("/sagas/checkout/diff", params={"against": "HEAD~1"})
        assert page.status_code == 200
        seen = text_of(page)
        assert "since HEAD~1" in seen
        assert "statesaga diagram --against HEAD~1" in seen
        assert "added state screened" in seen
        assert "added edge screen (reserved → screened)" in seen
        assert "changed edge order (screened → ordered) source reserved → screened" in seen
        assert "<svg" in page.text or "stateDiagram-v2" in page.text

        same = client.get("/sagas/checkout/diff", params={"against": "HEAD"})
        assert "No state or edge changed since HEAD" in text_of(same)


@pytest.mark.parametrize(
    ("against", "status", "said"),
    [
        ("HEAD~5", 404, "Revision or file not found"),
        ("no-such-branch", 404, "Revision or file not found"),
        ("--output=stolen", 400, "is not a git revision name"),
        (f"a{SCRIPT}", 400, "is not a git revision name"),
        ("", 400, "Which revision?"),
    ],
)
def test_a_revision_that_cannot_be_found_is_a_clear_page(
    changed_saga: type, against: str, status: int, said: str
) -> None:
    with view("sqlite://", sagas=[changed_saga]) as client:
        page = client.get("/sagas/checkout/diff", params={"against": against})
    assert page.status_code == status
    assert said in text_of(page)
    assert SCRIPT not in page.text


def test_a_saga_file_that_did_not_exist_at_the_revision_is_a_clear_page(
    changed_saga: type, tmp_path: Path
) -> None:
    # a branch of its own history, without the saga's file
    git(tmp_path, "checkout", "-q", "--orphan", "empty")
    git(tmp_path, "rm", "-rq", "--cached", ".")
    git(tmp_path, "commit", "-q", "--no-gpg-sign", "--allow-empty", "-m", "empty")
    with view("sqlite://", sagas=[changed_saga]) as client:
        page = client.get("/sagas/checkout/diff", params={"against": "empty"})
    assert page.status_code == 404
    seen = text_of(page)
    assert "Revision or file not found" in seen
    assert "checkout.py" in seen


def test_the_diff_of_a_saga_not_registered_is_a_404() -> None:
    with view("sqlite://") as client:
        page = client.get("/sagas/nope/diff", params={"against": "HEAD"})
    assert page.status_code == 404
    assert "No such saga" in text_of(page)
