"""The web view of a run with child runs: the parent's page lists them with links, a
child's page links its parent. Through a real server (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import re
from pathlib import Path

from child_sagas import BookHoliday, HolidayRequest, Holidays
from test_ui_http import text_of, view

from statesaga import Engine


def test_a_run_shows_its_child_runs_and_a_child_its_parent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'holidays.db'}"
    with Engine(url, resources=[Holidays()]) as engine:
        waiting = engine.start(BookHoliday, HolidayRequest("t-1", car_needs_confirmation=True))
        declined = engine.start(BookHoliday, HolidayRequest("t-2", card_declined=True))
        (open_child,) = engine.children(waiting.id)
        (undone_child,) = engine.children(declined.id)

    with view(url, sagas=[BookHoliday]) as client:
        page = client.get(f"/runs/{waiting.id}")
        assert page.status_code == 200
        text = text_of(page)
        assert "Child runs" in text
        links = re.findall(r'class="child-run" href="/runs/([0-9a-f]{32})"', page.text)
        assert links == [open_child.id]
        assert f"{open_child.id} book-package v1 waiting awaiting_car" in text
        assert f"waits for child run {open_child.id}" in text  # the timeline's wait

        child = client.get(f"/runs/{open_child.id}")
        assert child.status_code == 200
        assert re.findall(r'class="parent-run" href="/runs/([0-9a-f]{32})"', child.text) == [
            waiting.id
        ]
        assert "Child runs" not in text_of(child)

        page = client.get(f"/runs/{declined.id}")
        assert f"{undone_child.id} book-package v1 compensated" in text_of(page)
        # the child's page tells why it was compensated: its parent did
        child_text = text_of(client.get(f"/runs/{undone_child.id}"))
        assert f"ParentCompensated: its parent {declined.id} compensates" in child_text
