"""A store in a schema of its own still lets transactional steps reach the application's tables.

On PostgreSQL (the only database with schemas): the connections' search_path
is the store's schema, then the application's (``public`` unless told
otherwise); a write a step makes there commits with its transition. A
statement that names a table nobody can see fails at once, never retried.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from services import POSTGRES_URL

from statesaga import Engine, Retry, Saga, State, Status
from statesaga.errors import StoreError
from statesaga.settings import Settings
from statesaga.store.sql import SqlStore

SUFFIX = os.getpid()
STORE_SCHEMA = f"sagas_{SUFFIX}"
TICKETS = f"agency_tickets_{SUFFIX}"  # in public: the application's table
THREE = Retry(attempts=3, initial_interval=0.001, backoff=1, jitter=0)
CALLS: list[str] = []


@attrs.define
class Booking:
    ticket: str
    seats: str = "2"


@attrs.define
class Booked:
    done: bool = False


def issue_ticket(ctx: Any) -> Booked:
    CALLS.append(ctx.step)
    ctx.connection.execute(
        sa.text(f"INSERT INTO {TICKETS} (ticket, seats) VALUES (:ticket, CAST(:seats AS integer))"),
        {"ticket": ctx.input.ticket, "seats": ctx.input.seats},
    )
    return Booked(True)


class IssueTicket(Saga[Booking, Booked]):
    name = "issue-ticket"
    new = State(initial=True)
    issued = State(final=True)

    issue = new.to(issued).run(issue_ticket, transactional=True, pivot=True, retry=THREE)


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[sa.Engine]:
    """The test database's ``public`` with the application's table; the store's schema dropped."""
    del postgres_url  # reachable (or skipped/failed as the suite says)
    admin = sa.create_engine(POSTGRES_URL, poolclass=sa.NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {STORE_SCHEMA} CASCADE")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS public.{TICKETS}")
        connection.exec_driver_sql(
            f"CREATE TABLE public.{TICKETS} (ticket text PRIMARY KEY, seats integer NOT NULL)"
        )
    CALLS.clear()
    yield admin
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {STORE_SCHEMA} CASCADE")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS public.{TICKETS}")
    admin.dispose()


def store(**options: Any) -> SqlStore:
    return SqlStore(
        POSTGRES_URL,
        schema=STORE_SCHEMA,
        auto_migrate=True,
        pool_size=1,
        max_overflow=1,
        hot_connections=1,
        **options,
    )


def tickets(admin: sa.Engine) -> list[tuple[str, int]]:
    with admin.connect() as connection:
        rows = connection.exec_driver_sql(f"SELECT ticket, seats FROM public.{TICKETS}")
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_transactional_step_writes_to_a_public_table_with_its_transition(
    postgres: sa.Engine,
) -> None:
    with Engine(store(), sagas=[IssueTicket]) as engine:
        run = engine.start(IssueTicket, Booking("t-1"))
        # the store's own tables are in its schema, not in public
        with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
            where = connection.exec_driver_sql(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'statesaga_instances' AND table_schema = current_schema()"
            ).scalar()
    assert run.status is Status.COMPLETED
    assert where == STORE_SCHEMA
    assert tickets(postgres) == [("t-1", 2)]


def test_settings_name_the_schemas_after_the_stores_own(postgres: sa.Engine) -> None:
    settings = Settings.load(
        environ={"STATESAGA_APP_SCHEMAS": "public"},
        cwd="/nonexistent",
        database_url=POSTGRES_URL,
        schema=STORE_SCHEMA,
        pool_size=1,
        max_overflow=1,
        hot_connections=1,
    )
    assert settings.app_schemas == ("public",)
    store().close()  # migrated once (PostgreSQL stores never migrate themselves)
    with Engine.from_settings(settings, sagas=[IssueTicket]) as engine:
        with engine.store.engine.connect() as connection:  # type: ignore[attr-defined]
            path = connection.exec_driver_sql("SHOW search_path").scalar()
        run = engine.start(IssueTicket, Booking("t-2"))
    assert path == f"{STORE_SCHEMA}, public"
    assert run.status is Status.COMPLETED
    none = Settings.load(environ={"STATESAGA_APP_SCHEMAS": ""}, cwd="/nonexistent")
    assert none.app_schemas == ()


@pytest.mark.parametrize(
    ("app_schemas", "booking", "error"),
    [
        ((), Booking("t-3"), "ProgrammingError"),  # the table is not on the search path
        (("public",), Booking("t-4", seats="two"), "DataError"),  # bad data stays bad
    ],
)
def test_an_error_that_cannot_succeed_on_retry_is_not_retried(
    postgres: sa.Engine, app_schemas: tuple[str, ...], booking: Booking, error: str
) -> None:
    with Engine(store(app_schemas=app_schemas), sagas=[IssueTicket]) as engine:
        run = engine.start(IssueTicket, booking)
    assert CALLS == ["issue"]  # one attempt of three allowed
    assert run.status is Status.COMPENSATED  # nothing took effect: nothing to undo
    assert run.error is not None
    assert run.error.type == f"sqlalchemy.exc.{error}"
    assert not run.error.retryable
    assert tickets(postgres) == []


def test_an_app_schema_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(StoreError, match="app_schemas: 'public; drop' is not a plain identifier"):
        SqlStore(POSTGRES_URL, schema="sagas", app_schemas=["public; drop"])
