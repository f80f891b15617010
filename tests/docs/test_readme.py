"""The README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert printed.startswith("completed Checkout(reservation='rsv-c-42'")
    assert (tmp_path / "shop.db").exists()


def test_the_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert ".venv/bin/python -m definitions.checkout.demo" in text
    assert ".venv/bin/python -m pytest" in text
