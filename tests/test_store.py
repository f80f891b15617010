"""The SQL store: its migrations, SQLite settings, guards and the SQL leases."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from statesaga import StoreError
from statesaga.locks import InProcessLocks, SqlLocks
from statesaga.store import SqlStore
from statesaga.store.migrate import HEAD, MIGRATIONS, current_revision, upgrade
from statesaga.store.schema import metadata


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


def test_the_migrations_create_exactly_the_declared_schema(path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert diff == []


def test_the_head_revision_constant_matches_the_migration_scripts() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_the_default_sqlite_store_migrates_itself_and_uses_wal(path: Path) -> None:
    store = SqlStore(f"sqlite:///{path}")
    assert current_revision(store.engine) == HEAD
    with store.engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    store.close()
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 10000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


def test_a_store_that_may_not_migrate_says_how_to_fix_an_empty_database(path: Path) -> None:
    with pytest.raises(StoreError, match="run `statesaga db upgrade"):
        SqlStore(f"sqlite:///{path}", auto_migrate=False)


def test_a_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="use a SQLAlchemy URL"):
        SqlStore("nosuchdb://here")


def test_the_database_allows_one_open_instance_per_saga_and_key(path: Path) -> None:
    SqlStore(f"sqlite:///{path}").close()
    connection = sqlite3.connect(path)
    insert = (
        "INSERT INTO statesaga_instances (id, saga, saga_version, graph_hash, entity_key, "
        "correlation_id, state, status, machine, attempt, version, epoch, created_at, updated_at) "
        "VALUES (?, 's', 1, 'h', 'k', 'c', 'a', ?, '{}', 0, 1, 1, 0, 0)"
    )
    connection.execute(insert, ("1", "running"))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        connection.execute(insert, ("2", "waiting"))
    connection.execute("UPDATE statesaga_instances SET status = 'completed' WHERE id = '1'")
    connection.execute(insert, ("3", "running"))  # the key is free again
    connection.execute(insert.replace("'s', 1", "'other', 1"), ("4", "running"))  # per saga
    connection.close()


@pytest.mark.parametrize("kind", ["memory", "sql"])
def test_leases_exclude_renew_expire_and_release(kind: str, path: Path) -> None:
    if kind == "memory":
        one = two = InProcessLocks()
    else:  # two stores on one file stand for two processes
        one, two = SqlLocks(SqlStore(f"sqlite:///{path}")), SqlLocks(SqlStore(f"sqlite:///{path}"))
    lease = one.try_acquire("cart:1", "a", ttl=10, now=0)
    assert lease is not None
    assert two.try_acquire("cart:1", "b", ttl=10, now=5) is None
    renewed = one.renew(lease, ttl=10, now=8)
    assert renewed is not None
    assert renewed.expires_at == 18
    assert two.try_acquire("cart:1", "b", ttl=10, now=15) is None  # renewal kept it
    taken = two.try_acquire("cart:1", "b", ttl=10, now=19)  # expired: taken over
    assert taken is not None
    assert taken.owner == "b"
    assert one.renew(renewed, ttl=10, now=20) is None  # the old holder lost it
    one.release(renewed)  # releasing a lost lease does not touch the new holder's
    assert two.try_acquire("cart:1", "c", ttl=10, now=21) is None
    two.release(taken)
    assert one.try_acquire("cart:1", "a", ttl=10, now=22) is not None


def test_a_postgresql_store_keeps_its_tables_in_the_schema_it_is_given(postgres_url: str) -> None:
    from conftest import POSTGRES_URL
    from sagas import Linear, Order

    from statesaga import Engine, Status

    schema = f"statesaga_own_{os.getpid()}"
    store = SqlStore(POSTGRES_URL, schema=schema, auto_migrate=True)
    try:
        with Engine(store) as engine:
            assert engine.start(Linear, Order("s-1")).status is Status.COMPLETED
        check = sa.create_engine(POSTGRES_URL)
        with check.connect() as connection:
            count = connection.exec_driver_sql(
                f"SELECT count(*) FROM {schema}.statesaga_instances"
            ).scalar()
            version = connection.exec_driver_sql(
                f"SELECT version_num FROM {schema}.alembic_version"
            ).scalar()
        assert (count, version) == (1, HEAD)
    finally:
        with check.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        check.dispose()


def test_a_schema_must_be_a_plain_identifier_and_is_for_postgresql(path: Path) -> None:
    with pytest.raises(StoreError, match="is for PostgreSQL"):
        SqlStore(f"sqlite:///{path}", schema="x")
    with pytest.raises(StoreError, match="not a plain identifier"):
        SqlStore("postgresql+psycopg://nobody@127.0.0.1:1/none", schema="x; drop table y")
