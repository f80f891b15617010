"""The ``statesaga`` command as a user types it: in a fresh directory, output piped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from definitions.checkout import Shop


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner in an empty directory, with no statesaga settings in the environment.

    Its output is a pipe (not a terminal) of no declared width, as when a
    command's output is piped to another program.
    """
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "SAGAS", "RESOURCES", "SCHEMA", "REDIS_URL"):
        monkeypatch.delenv(f"STATESAGA_{name}", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("STATESAGA_TRACEBACK", raising=False)
    return CliRunner()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    """The shop's tables and a mug in stock, in the CLI's default database (statesaga.db)."""
    with Shop.open(f"sqlite:///{tmp_path / 'statesaga.db'}") as shop:
        shop.add_product("mug", "Enamel mug", unit_price=1250, stock=10)
        yield shop
