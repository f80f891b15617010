"""The pytest plugin of statesaga.testing, loaded through the ``pytest11`` entry point.

Fixtures (prefixed ``saga_`` so they never clash with a project's own):

- ``saga_clock``: a :class:`~statesaga.testing.FakeClock`;
- ``saga_database``: a database URL for the test: a new SQLite file, or the
  database named by ``STATESAGA_TESTING_DATABASE_URL`` (e.g. PostgreSQL; its
  store must be empty, and is not emptied for you);
- ``saga_engine``: an :class:`~statesaga.Engine` on ``saga_database`` driven by
  ``saga_clock`` (retries and timeouts wait for the clock, never for real time);
- ``saga_redis_url``: ``STATESAGA_TESTING_REDIS_URL``, or the test is skipped.

Hypothesis profiles ``statesaga-quick`` (25 examples) and ``statesaga-ci``
(300 examples, a reproduction blob on failure) are registered; one is loaded
only when asked for, by the ``statesaga_hypothesis_profile`` ini option or the
``STATESAGA_TESTING_PROFILE`` environment variable, so a project's own
profile choice is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from statesaga.engine import Engine
    from statesaga.testing.driver import FakeClock

__all__ = [
    "PROFILE_ENV",
    "saga_clock",
    "saga_database",
    "saga_engine",
    "saga_redis_url",
]

PROFILE_ENV = "STATESAGA_TESTING_PROFILE"

settings.register_profile("statesaga-quick", max_examples=25, deadline=None)
settings.register_profile("statesaga-ci", max_examples=300, deadline=None, print_blob=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "statesaga_hypothesis_profile",
        "hypothesis profile to load (statesaga-quick, statesaga-ci, or one of your own)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    profile = os.environ.get(PROFILE_ENV) or str(config.getini("statesaga_hypothesis_profile"))
    if profile:
        settings.load_profile(profile)


@pytest.fixture
def saga_clock() -> FakeClock:
    """A fake clock (epoch seconds) that moves only when the test says so."""
    from statesaga.testing.driver import FakeClock

    return FakeClock()


@pytest.fixture
def saga_database(tmp_path: Path) -> str:
    """The test's database URL: ``STATESAGA_TESTING_DATABASE_URL``, or a new SQLite file."""
    return os.environ.get("STATESAGA_TESTING_DATABASE_URL") or f"sqlite:///{tmp_path / 'sagas.db'}"


@pytest.fixture
def saga_engine(saga_database: str, saga_clock: FakeClock) -> Iterator[Engine]:
    """An engine on ``saga_database``, on ``saga_clock``, closed after the test."""
    from statesaga.engine import Engine

    engine = Engine(saga_database, clock=saga_clock, max_inline_sleep=0.0)
    yield engine
    engine.close()


@pytest.fixture
def saga_redis_url() -> str:
    """``STATESAGA_TESTING_REDIS_URL``; the test is skipped when it is not set."""
    url = os.environ.get("STATESAGA_TESTING_REDIS_URL")
    if not url:
        pytest.skip("set STATESAGA_TESTING_REDIS_URL to run against Redis")
    return url
