"""Shared test configuration.

Hypothesis profiles, picked by ``STATESAGA_HYPOTHESIS_PROFILE``:

- ``dev`` (default): 100 examples, for the edit-test loop;
- ``ci`` (default when ``CI=true``): 300 examples, prints a reproduction blob;
- ``quick``: 25 examples, for a fast smoke run.

No profile has a deadline: generated sagas vary in size, and a slow CI
machine must not turn that into flaky ``DeadlineExceeded`` failures.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("quick", max_examples=25, deadline=None)


def _hypothesis_profile() -> str:
    default = "ci" if os.environ.get("CI", "").strip().lower() == "true" else "dev"
    return os.environ.get("STATESAGA_HYPOTHESIS_PROFILE", default)


settings.load_profile(_hypothesis_profile())


# -- backends ------------------------------------------------------------------------------------
#
# Engine tests run on every backend: SQLite always, PostgreSQL when it is reachable at
# STATESAGA_TEST_POSTGRES_URL (default: the local test database). With
# STATESAGA_REQUIRE_SERVICES=1 (CI) an unreachable service fails the tests instead of
# skipping them.

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from services import POSTGRES_URL, REQUIRE_SERVICES, truncate  # noqa: E402


def _unavailable(service: str, error: Exception) -> None:
    message = f"{service} is not reachable ({error})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; STATESAGA_REQUIRE_SERVICES=1 makes this a failure")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> object:
    """The test PostgreSQL database, in a schema of this session's own, migrated once.

    A schema per session keeps concurrent test runs on one server apart.
    """
    from statesaga.store.migrate import upgrade

    admin = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    schema = f"statesaga_test_{os.getpid()}"
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except Exception as error:
        admin.dispose()
        _unavailable("PostgreSQL", error)
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> object:
    """A fresh store URL on each backend: a new SQLite file, or an emptied PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.path.join(tmp_path, 'sagas.db')}"
        return
    url = request.getfixturevalue("postgres_url")
    truncate(url)
    yield url
    truncate(url)


REDIS_URL = os.environ.get("STATESAGA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server, checked once; tests keep to key namespaces of their own."""
    try:
        import redis
    except ImportError as error:  # the statesaga[redis] extra is not installed
        _unavailable("Redis", error)
        raise
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable("Redis", error)
    finally:
        client.close()
    return REDIS_URL


# -- renderers -----------------------------------------------------------------------------------
#
# Diagrams are checked by the programs that draw them: Graphviz's dot, and mermaid-cli (npm ci at
# the repository's root, PUPPETEER_SKIP_DOWNLOAD=1) on the Chromium puppeteer-config.json names.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def mermaid_cli() -> tuple[str, str]:
    """``(mmdc, puppeteer config)``: skipped where either is missing, a failure in CI."""
    import json
    import shutil

    mmdc = os.path.join(ROOT, "node_modules", ".bin", "mmdc")
    config = os.path.join(ROOT, "puppeteer-config.json")
    with open(config, encoding="utf-8") as file:
        chromium = json.load(file)["executablePath"]
    if not os.path.exists(mmdc) or shutil.which("node") is None:
        _unavailable(
            "mermaid-cli", FileNotFoundError(f"{mmdc}: run PUPPETEER_SKIP_DOWNLOAD=1 npm ci")
        )
    if not os.path.exists(chromium):
        _unavailable("Chromium", FileNotFoundError(f"{chromium}: apt-get install chromium"))
    return mmdc, config


@pytest.fixture(scope="session")
def dot() -> str:
    """Graphviz's ``dot``: skipped where it is missing, a failure in CI."""
    import shutil

    found = shutil.which("dot")
    if found is None:
        _unavailable("Graphviz's dot", FileNotFoundError("dot: apt-get install graphviz"))
    assert found is not None
    return found


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> object:
    """A runner in an empty directory, with no statesaga settings in the environment.

    Its output is a pipe (not a terminal) of no declared width, as when a
    command's output is piped to another program.
    """
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "SAGAS", "RESOURCES", "SCHEMA", "REDIS_URL"):
        monkeypatch.delenv(f"STATESAGA_{name}", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("STATESAGA_TRACEBACK", raising=False)
    return CliRunner()


@pytest.fixture
def shop(tmp_path: os.PathLike[str]) -> object:
    """The shop's tables and a mug in stock, in the CLI's default database (statesaga.db)."""
    from definitions.checkout import Shop

    with Shop.open(f"sqlite:///{os.path.join(tmp_path, 'statesaga.db')}") as opened:
        opened.add_product("mug", "Enamel mug", unit_price=1250, stock=10)
        yield opened


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    """Every test starts with an empty journal of the shared test sagas (tests/sagas.py)."""
    import sagas

    sagas.journal.reset()
