"""Settings: arguments over environment over TOML over defaults; bad values fail at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sagas
from sagas import Order, journal
from typer.testing import CliRunner

from statesaga import Engine, Retry, SettingsError, StateSagaError, Status
from statesaga.cli import app
from statesaga.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh directory to work in, with no STATESAGA_* setting in the environment."""
    for name, _, _ in Settings().rows():
        monkeypatch.delenv(f"STATESAGA_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_defaults_come_from_nowhere(clean_env: Path) -> None:
    settings = Settings.load()
    assert settings == Settings()
    assert settings.database_url == "sqlite:///statesaga.db"
    assert settings.redis_url is None
    assert set(settings.sources.values()) == {"default"}


def test_arguments_win_over_environment_over_toml(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "pyproject.toml").write_text(
        '[tool.statesaga]\nlease-duration = "2m"\nretention_days = 30\nworker_concurrency = 2\n'
    )
    monkeypatch.setenv("STATESAGA_WORKER_CONCURRENCY", "4")
    monkeypatch.setenv("STATESAGA_RETENTION_DAYS", "7")
    settings = Settings.load(retention_days=90, schema=None)
    assert settings.lease_duration == 120.0
    assert settings.worker_concurrency == 4
    assert settings.retention_days == 90
    assert settings.sources["lease_duration"] == "pyproject.toml"
    assert settings.sources["worker_concurrency"] == "STATESAGA_WORKER_CONCURRENCY"
    assert settings.sources["retention_days"] == "argument"
    assert settings.sources["schema"] == "default"  # None arguments are ignored


def test_statesaga_toml_is_read_before_pyproject(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text("[tool.statesaga]\nworker_concurrency = 2\n")
    (clean_env / "statesaga.toml").write_text('worker_concurrency = 3\ndefault_deadline = "15m"\n')
    settings = Settings.load()
    assert (settings.worker_concurrency, settings.default_deadline) == (3, 900.0)
    assert settings.sources["worker_concurrency"] == "statesaga.toml"


def test_the_default_retry_policy_is_a_retry(clean_env: Path) -> None:
    policy = Settings.load(retry_attempts=5, retry_initial_interval="500ms").retry
    assert policy == Retry(attempts=5, initial_interval=0.5, backoff=2, max_interval=60)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STATESAGA_LEASE_DURATION", "soon", "a positive duration"),
        ("STATESAGA_WORKER_CONCURRENCY", "0", "a whole number >= 1"),
        ("STATESAGA_DATABASE_URL", "mysql://x", "a SQLAlchemy URL"),
        ("STATESAGA_REDIS_URL", "localhost:6379", "a Redis URL"),
        ("STATESAGA_RETRY_BACKOFF", "0.5", "a number >= 1"),
        ("STATESAGA_SCHEMA", "drop table", "a plain identifier"),
    ],
)
def test_a_bad_value_names_the_key_its_source_and_the_expected_form(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        Settings.load()
    key = variable.removeprefix("STATESAGA_").lower()
    assert raised.value.setting == key
    assert f"{key}={value!r} (from {variable})" in str(raised.value)
    assert expected in str(raised.value)
    assert isinstance(raised.value, StateSagaError)


def test_unknown_keys_and_broken_toml_fail_clearly(clean_env: Path) -> None:
    (clean_env / "statesaga.toml").write_text("lease_duraton = 30\n")
    with pytest.raises(SettingsError, match=r"unknown setting .lease_duraton. in statesaga\.toml"):
        Settings.load()
    (clean_env / "statesaga.toml").write_text("lease_duration = \n")
    with pytest.raises(SettingsError, match=r"statesaga\.toml is not valid TOML"):
        Settings.load()
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load(lease=3)


def test_an_engine_from_settings_uses_the_store_lease_and_default_deadline(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESAGA_DATABASE_URL", f"sqlite:///{clean_env / 'env.db'}")
    monkeypatch.setenv("STATESAGA_DEFAULT_DEADLINE", "1h")
    journal.calls.clear()
    journal.fail.clear()
    with Engine.from_settings(lease_duration=12) as engine:
        assert engine.lease_ttl == 12
        assert engine.locks is None
        run = engine.start(sagas.Linear, Order("s-1"))
        assert run.status is Status.COMPLETED
        row = engine.store.get(run.id)
        assert row is not None
        assert row.deadline == pytest.approx(row.created_at + 3600)
    assert (clean_env / "env.db").exists()


def test_postgres_and_redis_from_the_environment_with_no_code_change(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str
) -> None:
    from statesaga.locks import RedisLocks

    monkeypatch.setenv("STATESAGA_DATABASE_URL", postgres_url)
    monkeypatch.setenv("STATESAGA_REDIS_URL", redis_url)
    journal.calls.clear()
    journal.fail.clear()
    with Engine.from_settings() as engine:
        assert engine.store.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
        assert isinstance(engine.locks, RedisLocks)
        run = engine.start(sagas.Linear, Order("pg-1"), key="order:settings:pg-1")
        assert run.status is Status.COMPLETED
        assert engine.get(run.id).status is Status.COMPLETED


def test_the_async_engine_gets_async_redis_locks(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from statesaga.aio import AsyncEngine
    from statesaga.locks import AsyncRedisLocks

    engine = AsyncEngine.from_settings(
        database_url=f"sqlite:///{clean_env / 'a.db'}", redis_url=redis_url
    )
    try:
        assert isinstance(engine.locks, AsyncRedisLocks)
    finally:
        engine.close()


def test_config_prints_the_effective_settings_and_their_sources(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "statesaga.toml").write_text("retention_days = 30\n")
    monkeypatch.setenv("STATESAGA_REDIS_URL", "redis://cache:6379/0")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["retention_days"] == {"value": 30, "source": "statesaga.toml"}
    assert shown["redis_url"] == {"value": "redis://cache:6379/0", "source": "STATESAGA_REDIS_URL"}
    assert shown["lease_duration"]["source"] == "default"
    table = CliRunner().invoke(app, ["config"])
    assert table.exit_code == 0, table.output
    assert "statesaga.toml" in table.output
    assert "STATESAGA_LEASE_DURATION" in table.output


def test_commands_fail_at_start_on_a_bad_setting_and_db_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATESAGA_LEASE_DURATION", "-5")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 1
    assert "SettingsError: lease_duration='-5' (from STATESAGA_LEASE_DURATION)" in result.output
    monkeypatch.delenv("STATESAGA_LEASE_DURATION")
    monkeypatch.setenv("STATESAGA_DATABASE_URL", f"sqlite:///{clean_env / 'env.db'}")
    result = CliRunner().invoke(
        app, ["db", "upgrade", "--db", f"sqlite:///{clean_env / 'flag.db'}"]
    )
    assert result.exit_code == 0, result.output
    assert (clean_env / "flag.db").exists()
    assert not (clean_env / "env.db").exists()


def test_config_hides_passwords(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESAGA_DATABASE_URL", "postgresql+psycopg://shop:s3cret@db/shop")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["database_url"]["value"] == (
        "postgresql+psycopg://shop:***@db/shop"
    )


def test_a_schema_setting_keeps_the_tables_in_their_own_postgres_schema(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    import os

    import sqlalchemy as sa
    from services import POSTGRES_URL

    schema = f"statesaga_settings_{os.getpid()}"
    monkeypatch.setenv("STATESAGA_DATABASE_URL", POSTGRES_URL)
    monkeypatch.setenv("STATESAGA_SCHEMA", schema)
    admin = sa.create_engine(POSTGRES_URL)
    try:
        upgraded = CliRunner().invoke(app, ["db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        journal.calls.clear()
        journal.fail.clear()
        with Engine.from_settings() as engine:
            run = engine.start(sagas.Linear, Order("schema-1"))
        assert run.status is Status.COMPLETED
        with admin.connect() as connection:
            count = connection.exec_driver_sql(
                f"SELECT count(*) FROM {schema}.statesaga_instances"
            ).scalar_one()
        assert count == 1
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def test_a_plain_engine_takes_postgres_and_redis_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str
) -> None:
    from statesaga.locks import RedisLocks

    monkeypatch.setenv("STATESAGA_DATABASE_URL", postgres_url)
    monkeypatch.setenv("STATESAGA_REDIS_URL", redis_url)
    journal.calls.clear()
    journal.fail.clear()
    with Engine() as engine:  # the code says nothing about where things live
        assert engine.store.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
        assert isinstance(engine.locks, RedisLocks)
        run = engine.start(sagas.Linear, Order("pg-2"), key="order:settings:pg-2")
        assert run.status is Status.COMPLETED


def test_a_plain_engine_defaults_to_the_sqlite_file_in_the_current_directory(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(clean_env)
    with Engine() as engine:
        assert engine.locks is None
        assert engine.start(sagas.Linear, Order("lite-1")).status is Status.COMPLETED
    assert (clean_env / "statesaga.db").exists()
