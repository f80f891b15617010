"""Where the service-backed tests find PostgreSQL, and how they empty it between tests.

Kept out of ``conftest.py`` so that test modules can import it by name (several
``conftest.py`` files share that module name).
"""

from __future__ import annotations

import os

import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "STATESAGA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1"
STORE_TABLES = (
    "statesaga_inbox",
    "statesaga_history",
    "statesaga_locks",
    "statesaga_instances",
)


def truncate(url: str) -> None:
    """Empty the store's tables (and the tests' effects table) at ``url``."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        extra = sa.inspect(connection).has_table("test_effects")
        tables = ", ".join((*STORE_TABLES, *(("test_effects",) if extra else ())))
        connection.exec_driver_sql(f"TRUNCATE {tables} CASCADE")
    engine.dispose()
