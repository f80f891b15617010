"""The SQL store: its migrations, SQLite settings, guards and the SQL leases."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from statesaga import FencedOut, StoreError
from statesaga.locks import InProcessLocks, SqlLocks
from statesaga.store import SqlStore
from statesaga.store.base import KEEPABLE, HistoryRow, InstanceRow, Write
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
    from sagas import Linear, Order
    from services import POSTGRES_URL

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


def test_a_store_in_its_own_schema_is_not_fooled_by_another_store_on_its_search_path(
    postgres_url: str,
) -> None:
    from sagas import Linear, Order
    from services import POSTGRES_URL

    from statesaga import Engine, Status

    other, mine = f"statesaga_other_{os.getpid()}", f"statesaga_mine_{os.getpid()}"
    SqlStore(POSTGRES_URL, schema=other, auto_migrate=True).close()  # a store already there
    check = sa.create_engine(POSTGRES_URL)
    try:
        # the other store's schema follows ours on the search path (as `public` does)
        store = SqlStore(POSTGRES_URL, schema=mine, app_schemas=[other], auto_migrate=True)
        with Engine(store) as engine:
            assert engine.start(Linear, Order("s-1")).status is Status.COMPLETED
        with check.connect() as connection:
            counts = [
                connection.exec_driver_sql(
                    f"SELECT count(*) FROM {name}.statesaga_instances"
                ).scalar()
                for name in (mine, other)
            ]
            version = connection.exec_driver_sql(
                f"SELECT version_num FROM {mine}.alembic_version"
            ).scalar()
        assert counts == [1, 0]  # the run is in our schema, the other store untouched
        assert version == HEAD
    finally:
        with check.begin() as connection:
            for name in (mine, other):
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        check.dispose()


def test_a_schema_must_be_a_plain_identifier_and_is_for_postgresql(path: Path) -> None:
    with pytest.raises(StoreError, match="is for PostgreSQL"):
        SqlStore(f"sqlite:///{path}", schema="x")
    with pytest.raises(StoreError, match="not a plain identifier"):
        SqlStore("postgresql+psycopg://nobody@127.0.0.1:1/none", schema="x; drop table y")


# -- the hot path: a transition's compare-and-set and its history rows --------------------------


def _instance_row(instance_id: str) -> InstanceRow:
    return InstanceRow(
        id=instance_id, saga="s", saga_version=1, graph_hash="h", entity_key=None,
        idempotency_key=None, correlation_id="c", state="a", status="running", input={},
        context={}, output=None, machine={"seq": 0}, error=None, attempt=1, version=1, epoch=1,
        lease_owner="me", lease_expires_at=100.0, due_at=None, deadline=None, created_at=1.0,
        updated_at=1.0,
    )  # fmt: skip


def _history_row(instance_id: str, version: int, transition: str = "t") -> HistoryRow:
    return HistoryRow(
        instance_id=instance_id, version=version, kind="forward", transition=transition,
        step="f", from_state="a", to_state="b", attempt=1, event=None,
        error={"type": "E", "message": "m"}, epoch=1, correlation_id="c", started_at=2.0,
        finished_at=2.5,
    )  # fmt: skip


def _write(state: str) -> Write:
    return Write(
        state=state, status="running", context="{}", machine='{"seq":1}', error=None,
        output=None, attempt=1, due_at=None, lease_owner="me", lease_expires_at=100.0,
        updated_at=3.0,
    )  # fmt: skip


def test_a_transition_writes_its_history_rows_with_the_instance_or_nothing(db: str) -> None:
    store = SqlStore(db, auto_migrate=True)
    try:
        store.insert(_instance_row("i1"), [_history_row("i1", 1, "start")])
        store.insert(_instance_row("i2"), [_history_row("i2", 1), _history_row("i2", 1, "u")])
        store.transition("i1", 1, 1, _write("b"), [_history_row("i1", 2)])  # one row
        store.transition("i1", 2, 1, _write("c"), [])  # none
        rows = [_history_row("i1", 4, "x"), _history_row("i1", 4, "y")]
        store.transition("i1", 3, 1, _write("d"), rows)  # several
        before = store.dump()
        for version, epoch, history_rows in (
            (3, 1, [_history_row("i1", 4)]),  # a stale version
            (4, 2, [_history_row("i1", 5)]),  # a stale epoch
            (4, 2, []),
            (4, 2, rows),
            (1, 1, [_history_row("nope", 2)]),
        ):
            with pytest.raises(FencedOut):
                store.transition("i1", version, epoch, _write("z"), history_rows)
        with pytest.raises(FencedOut):
            store.transition("nope", 1, 1, _write("z"), [_history_row("nope", 2)])
        assert store.dump() == before, "a fenced-out write wrote something"
        row = store.get("i1")
        assert row is not None
        assert (row.state, row.version, row.machine) == ("d", 4, {"seq": 1})
        history = store.history("i1")
        assert [(h.version, h.transition) for h in history] == [
            (1, "start"), (2, "t"), (4, "x"), (4, "y"),
        ]  # fmt: skip
        assert history[1] == attrs.evolve(_history_row("i1", 2), id=history[1].id)
        assert [h.transition for h in store.history("i2")] == ["t", "u"]
    finally:
        store.close()


def test_a_write_leaves_the_columns_it_keeps_as_the_row_holds_them(db: str) -> None:
    store = SqlStore(db, auto_migrate=True)
    try:
        store.insert(_instance_row("i1"), [_history_row("i1", 1, "start")])
        lean = attrs.evolve(
            _write("b"),
            status="compensating",
            due_at=5.0,
            lease_owner="someone else",
            lease_expires_at=1.0,
            keep=KEEPABLE,
        )
        store.transition("i1", 1, 1, lean, [_history_row("i1", 2)])  # one statement on PG
        store.transition("i1", 2, 1, attrs.evolve(lean, state="c"), [])  # an UPDATE alone
        with store.transaction() as connection:  # inside a step's own transaction
            store.transition("i1", 3, 1, attrs.evolve(lean, state="d"), [], connection)
        row = store.get("i1")
        assert row is not None
        assert (row.state, row.version, row.updated_at) == ("d", 4, 3.0)
        kept = (row.status, row.due_at, row.lease_owner, row.lease_expires_at)
        assert kept == ("running", None, "me", 100.0), "a kept column was written"
        # only what it names is kept: a write keeping the owner writes the rest
        some = attrs.evolve(lean, keep=frozenset({"lease_owner"}))
        store.transition("i1", 4, 1, some, [_history_row("i1", 5)])
        row = store.get("i1")
        assert row is not None
        written = (row.status, row.due_at, row.lease_owner, row.lease_expires_at)
        assert written == ("compensating", 5.0, "me", 1.0)
        with pytest.raises(FencedOut):  # kept or not, the compare-and-set holds
            store.transition("i1", 4, 1, lean, [_history_row("i1", 5)])
    finally:
        store.close()


def test_a_postgresql_hot_path_leaves_no_transaction_open_and_cuts_nothing(
    postgres_url: str,
) -> None:
    import psycopg
    from services import truncate as _truncate

    _truncate(postgres_url)
    store = SqlStore(postgres_url)
    try:
        store.insert(_instance_row("i1"), [_history_row("i1", 1, "start")])
        idle = psycopg.pq.TransactionStatus.IDLE
        with store._hot.connection() as hot:  # the one connection the calls above used
            raw = hot.raw
        assert store._hot.open == 1
        assert raw.autocommit
        assert raw.info.transaction_status == idle
        with pytest.raises(FencedOut):
            store.transition("i1", 7, 1, _write("b"), [_history_row("i1", 8)])
        assert raw.info.transaction_status == idle
        # a value too long for its column is an error, as in an INSERT's VALUES: never cut short
        with pytest.raises(psycopg.errors.StringDataRightTruncation):
            store.transition("i1", 1, 1, _write("b"), [_history_row("i1", 2, "t" * 201)])
        assert raw.info.transaction_status == idle
        row = store.get("i1")
        assert row is not None
        assert row.version == 1
        assert [h.transition for h in store.history("i1")] == ["start"]
        store.transition("i1", 1, 1, _write("b"), [_history_row("i1", 2, "t" * 200)])
        assert [len(h.transition or "") for h in store.history("i1")] == [5, 200]
    finally:
        store.close()
        _truncate(postgres_url)


# -- batched lease renewal ------------------------------------------------------------------------


def test_extend_leases_renews_every_lease_whose_epoch_matches_in_one_call(db: str) -> None:
    store = SqlStore(db, auto_migrate=True)
    try:
        ids = [f"r{index:05d}" for index in range(6000)]  # more than one slice on SQLite
        for instance_id in ids[:3]:
            store.insert(_instance_row(instance_id), [_history_row(instance_id, 1, "start")])
        engine = store.engine
        with engine.begin() as connection:  # the rest straight in: 6,000 starts take a while
            rows = [attrs.asdict(_instance_row(instance_id)) for instance_id in ids[3:]]
            connection.execute(sa.insert(metadata.tables["statesaga_instances"]), rows)
        store.claim("r00001", 1, "thief", 500.0, now=200.0)  # epoch 2: r00001 lost its claim
        leases = [(instance_id, 1) for instance_id in ids] + [("gone", 1)]
        assert store.extend_leases(leases, 300.0) == set(ids) - {"r00001"}
        assert store.extend_leases([], 400.0) == set()
        expiries = {row.id: row.lease_expires_at for row in store.list(limit=10_000)}
        assert expiries["r00001"] == 500.0  # the thief's lease, untouched
        assert {expiries[i] for i in ids if i != "r00001"} == {300.0}
        assert store.extend_leases([("r00001", 2), ("r00002", 2)], 600.0) == {"r00001"}
    finally:
        store.close()


# -- the application's own reads --------------------------------------------------------------


def test_a_read_through_reading_does_not_wait_for_a_writer(path: Path) -> None:
    store = SqlStore(f"sqlite:///{path}", busy_timeout=5.0)
    try:
        store.insert(_instance_row("i1"), [_history_row("i1", 1, "start")])
        count = "SELECT count(*) FROM statesaga_instances"
        with store.transaction() as writer:  # holds the write lock till the block ends
            writer.exec_driver_sql("DELETE FROM statesaga_history")
            started = time.monotonic()
            with store.reading() as connection:
                seen = connection.exec_driver_sql("SELECT count(*) FROM statesaga_history")
                assert seen.scalar() == 1  # what was committed, not the writer's delete
                assert connection.exec_driver_sql(count).scalar() == 1
            assert time.monotonic() - started < 1.0, "the read queued behind the writer"
            # a plain connection's transaction would take the write lock and wait
        with store.reading() as connection:
            assert (
                connection.exec_driver_sql("SELECT count(*) FROM statesaga_history").scalar() == 0
            )
    finally:
        store.close()
