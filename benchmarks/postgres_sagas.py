"""Sagas per second through ``Engine`` on PostgreSQL, beside the raw ``psycopg`` floor.

A 5-step saga of no-op steps (``read_only=True``, returning ``None``) is run
to completion through ``Engine.start``, one saga after another, by 1 worker
and by 8 workers. A worker is a process of its own (spawned once, reused for
every repeat) holding one ``Engine``; the 8 workers start sagas at the same
time, each sequentially. The engine commits once to start a saga (instance
row + START history row) and once per step (the instance's compare-and-set
UPDATE + one history row): 6 commits per saga.

The floor is plain ``psycopg`` 3 making exactly those commits in the same
run, in the same worker processes: INSERT instance + INSERT history,
``commit()``; then, per step, UPDATE instance + INSERT history, ``commit()``
(psycopg opens each transaction with ``BEGIN``: four round trips per
commit). It writes into the same tables and indexes (a schema migrated by
the store) with payloads of the same size, one connection per worker,
sequentially for 1 worker and on 8 connections at once for 8 workers. Both
sides prepare their statements the same way (psycopg's default: server-side
after the fifth execution of a statement on a connection).

The engine writes each commit on PostgreSQL as one autocommitted statement
(``WITH moved AS (UPDATE ... RETURNING id) INSERT ... SELECT ... FROM
moved``, and the same shape for the start): one round trip per commit. With
``--one-statement``, a third variant shows plain ``psycopg`` writing the
commits in that shape too: what separates the engine from it is the
engine's own work (the interpreter, building rows, encoding JSON, its driver
loop).

Each variant writes into a schema of its own, created for the run and
dropped after it. After a warm-up, each repeat runs every variant for
``--seconds`` seconds, variants interleaved repeat by repeat so that a noisy
neighbour slows all of them alike; the figure is the median of the repeats.
Garbage collection stays on: it is part of what a saga costs.

Usage::

    python benchmarks/postgres_sagas.py                   # a table
    python benchmarks/postgres_sagas.py --json out.json   # and the figures as JSON
    python benchmarks/postgres_sagas.py --profile         # and where the engine's time goes
    python benchmarks/postgres_sagas.py --one-statement   # and psycopg in the engine's shape
    python benchmarks/postgres_sagas.py --url postgresql+psycopg://user@host:5432/db

The targets: the engine at no less than 80 % of the floor with 1 worker and
70 % with 8 (``TARGETS``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.dialects import postgresql

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from five_steps import STEPS, FiveSteps, Nothing, instance_values, machine_json

from statesaga import Engine, Status
from statesaga.store import SqlStore
from statesaga.store.migrate import upgrade
from statesaga.store.schema import history, instances

DEFAULT_URL = os.environ.get(
    "STATESAGA_BENCH_POSTGRES_URL",
    os.environ.get(
        "STATESAGA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
)
TARGETS = {1: 0.8, 8: 0.7}
COMMITS_PER_SAGA = 1 + STEPS


# -- where the tables are ----------------------------------------------------------------------


def schema_url(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def conninfo(url: str, schema: str) -> str:
    """A libpq connection string for ``psycopg.connect``, into ``schema``."""
    parsed = sa.make_url(url)
    return psycopg.conninfo.make_conninfo(
        "",
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        options=f"-csearch_path={schema}",
    )


@contextmanager
def schemas(url: str, names: list[str]) -> Iterator[None]:
    """Create and migrate the schemas ``names``; drop them afterwards."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                connection.exec_driver_sql(f"CREATE SCHEMA {name}")
        for name in names:
            engine = sa.create_engine(schema_url(url, name))
            upgrade(engine)
            engine.dispose()
        yield
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.dispose()


# -- the runners: each runs one saga per call ---------------------------------------------------

Runner = Callable[[], None]


class _OneRowCursor(psycopg.Cursor[Any]):
    """A cursor whose ``executemany`` of a single row is an ``execute`` (no pipeline)."""

    def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        params = list(params_seq)
        if len(params) == 1 and not returning:
            self.execute(query, params[0])
            return
        super().executemany(query, params, returning=returning)


def _hot_raw(store: Any) -> Any:
    """The psycopg connection of the store's hot path (one worker reuses the one it opened)."""
    with store._hot.connection() as hot:
        return hot.raw


def engine_runner(url: str, prototype: bool = False) -> tuple[Runner, Callable[[], None], Engine]:
    """One saga through ``Engine.start`` per call.

    With ``prototype``, the engine's own connection (this thread's) inserts a
    transition's single history row with ``execute`` instead of ``executemany``.
    """
    engine = Engine(url, sagas=[FiveSteps])
    if prototype:
        store: Any = engine.store
        _hot_raw(store).cursor_factory = _OneRowCursor
    start = engine.start
    payload = Nothing()

    def run() -> None:
        start(FiveSteps, payload)

    return run, engine.close, engine


_HISTORY_CASTS = (
    "%s::text, %s::integer, %s::text, %s::text, %s::text, %s::text, %s::text, %s::integer, "
    "%s::text, %s::jsonb, %s::integer, %s::text, %s::double precision, %s::double precision"
)


def floor_runner(
    info: str, one_statement: bool = False
) -> tuple[Runner, Callable[[], None], psycopg.Connection[Any]]:
    """The same commits through plain ``psycopg``, into the store's own tables.

    With ``one_statement``, each commit is one statement in autocommit, as the
    engine writes them: the start's INSERTs, and each step's UPDATE and INSERT,
    joined by ``WITH ... RETURNING id``.
    """
    connection = psycopg.connect(info, autocommit=one_statement)
    instance_columns = [c.name for c in instances.columns]
    history_columns = [c.name for c in history.columns if c.name != "id"]
    insert_instance = (
        f"INSERT INTO statesaga_instances ({', '.join(instance_columns)}) "
        f"VALUES ({', '.join(['%s'] * len(instance_columns))})"
    )
    insert_history = (
        f"INSERT INTO statesaga_history ({', '.join(history_columns)}) "
        f"VALUES ({', '.join(['%s'] * len(history_columns))})"
    )
    update_instance = (
        "UPDATE statesaga_instances SET state = %s, status = %s, context = %s, machine = %s, "
        "error = %s, output = %s, attempt = %s, due_at = %s, lease_owner = %s, "
        "lease_expires_at = %s, updated_at = %s, version = version + 1 "
        "WHERE id = %s AND version = %s AND epoch = %s"
    )
    history_select = (
        f"INSERT INTO statesaga_history ({', '.join(history_columns)}) SELECT {_HISTORY_CASTS}"
    )
    start_one = f"WITH i AS ({insert_instance} RETURNING id) {history_select} FROM i"
    step_one = f"WITH moved AS ({update_instance} RETURNING id) {history_select} FROM moved"
    owner = f"bench:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    machines = [machine_json(seq) for seq in range(STEPS + 1)]
    cursor = connection.cursor()
    execute = cursor.execute
    commit = connection.commit

    def run() -> None:
        # what the engine writes, with the same sizes; the ids are fresh per saga
        instance_id = uuid.uuid4().hex
        now = time.time()
        values = instance_values(instance_id, now, owner)
        instance = [values.get(c) for c in instance_columns]
        started = (instance_id, 1, "start", None, None, "s0", "s0", 0, None, None, 1,
                   instance_id, now, now)  # fmt: skip
        if one_statement:
            execute(start_one, (*instance, *started))
        else:
            execute(insert_instance, instance)
            execute(insert_history, started)
            commit()
        for seq in range(1, STEPS + 1):
            last = seq == STEPS
            now = time.time()
            update = (f"s{seq}", "completed" if last else "running", "{}", machines[seq], None,
                      None, 0 if last else 1, None, None if last else owner,
                      None if last else now + 30, now, instance_id, seq, 1)  # fmt: skip
            moved = (instance_id, seq + 1, "forward", f"t{seq}", f"t{seq}", f"s{seq - 1}",
                     f"s{seq}", 1, None, None, 1, instance_id, now, now)  # fmt: skip
            if one_statement:
                execute(step_one, (*update, *moved))
                if cursor.rowcount != 1:  # the compare-and-set, checked as the engine does
                    raise RuntimeError("fenced out")
            else:
                execute(update_instance, update)
                execute(insert_history, moved)
                commit()

    return run, connection.close, connection


# -- the worker processes ---------------------------------------------------------------------


def _worker(
    pipe: Connection, engine_url: str, floor_info: str, prototype: bool, one_statement: bool
) -> None:
    """A worker process: runs the variant it is told to, when and for as long as told."""
    runners: dict[str, Runner] = {}
    closers = []
    makers: list[tuple[str, Callable[[], tuple[Runner, Callable[[], None], Any]]]] = [
        ("engine", lambda: engine_runner(engine_url)),
        ("floor", lambda: floor_runner(floor_info)),
    ]
    if prototype:
        makers.append(("prototype", lambda: engine_runner(engine_url, prototype=True)))
    if one_statement:
        makers.append(("one_statement", lambda: floor_runner(floor_info, one_statement=True)))
    for name, make in makers:
        run, close, _ = make()
        runners[name] = run
        closers.append(close)
    pipe.send("ready")
    try:
        while (order := pipe.recv()) is not None:
            name, at, seconds = order
            run = runners[name]
            time.sleep(max(0.0, at - time.time()))
            began, cpu = time.time(), time.process_time()
            end = began + seconds
            count = 0
            while time.time() < end:
                run()
                count += 1
            pipe.send((count, time.time() - began, time.process_time() - cpu))
    finally:
        for close in closers:
            close()


class Workers:
    """``n`` worker processes, spawned once and told what to run."""

    def __init__(
        self, n: int, engine_url: str, floor_info: str, prototype: bool, one_statement: bool
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(n):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(child, engine_url, floor_info, prototype, one_statement),
                daemon=True,
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            if pipe.recv() != "ready":  # pragma: no cover - a worker failed to start
                raise RuntimeError("a worker process did not start")

    def run(self, name: str, workers: int, seconds: float) -> tuple[float, float]:
        """Sagas per second of ``workers`` processes running ``name`` at once, and the
        CPU time the workers themselves spent per saga (µs; the server's is not counted)."""
        at = time.time() + 0.2
        for pipe in self.pipes[:workers]:
            pipe.send((name, at, seconds))
        replies = [pipe.recv() for pipe in self.pipes[:workers]]
        rate = sum(count / elapsed for count, elapsed, _ in replies)
        cpu = sum(cpu for _, _, cpu in replies) / max(1, sum(count for count, _, _ in replies))
        return float(rate), cpu * 1e6

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(30)
            if process.is_alive():  # pragma: no cover
                process.kill()


# -- measuring -----------------------------------------------------------------------------------


@attrs.frozen
class Variant:
    """One line of the table: what runs, on how many workers."""

    key: str
    runner: str
    workers: int
    description: str


def variants(workers: int, prototype: bool, one_statement: bool = False) -> list[Variant]:
    lines = []
    for count in (1, workers):
        plural = "worker" if count == 1 else "workers"
        lines.append(Variant(f"floor_{count}", "floor", count, f"psycopg floor, {count} {plural}"))
        if one_statement:
            lines.append(
                Variant(
                    f"one_statement_{count}",
                    "one_statement",
                    count,
                    f"psycopg, 1 statement/commit, {count} {plural}",
                )
            )
        lines.append(Variant(f"engine_{count}", "engine", count, f"engine, {count} {plural}"))
        if prototype:
            lines.append(
                Variant(
                    f"prototype_{count}",
                    "prototype",
                    count,
                    f"engine (1 row: execute), {count} {plural}",
                )
            )
    return lines


def check(engine_url: str) -> None:
    """The engine does what the floor mimics: a completed run, one commit per history row."""
    with Engine(engine_url, sagas=[FiveSteps]) as engine:
        done = engine.start(FiveSteps, Nothing())
        assert done.status is Status.COMPLETED, done
        rows = engine.history(done.id)
    assert len(rows) == COMMITS_PER_SAGA, rows
    assert [h.version for h in rows] == list(range(1, COMMITS_PER_SAGA + 1)), rows


def measure(
    pool: Workers, lines: list[Variant], seconds: float, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Sagas per second of every variant per repeat, interleaved; and client CPU µs per saga."""
    for line in lines:  # warm up: prepared statements, caches, generated code
        pool.run(line.runner, line.workers, min(1.0, seconds / 2))
    results: dict[str, list[float]] = {line.key: [] for line in lines}
    cpu: dict[str, list[float]] = {line.key: [] for line in lines}
    for _ in range(repeats):
        for line in lines:
            rate, cpu_us = pool.run(line.runner, line.workers, seconds)
            results[line.key].append(rate)
            cpu[line.key].append(cpu_us)
    return results, cpu


def summary(
    results: dict[str, list[float]],
    cpu: dict[str, list[float]],
    lines: list[Variant],
    workers: int,
    seconds: float,
    repeats: int,
    server: dict[str, str],
) -> dict[str, Any]:
    """The figures as a JSON-ready document."""
    medians = {key: statistics.median(values) for key, values in results.items()}
    verdicts = {}
    for count in (1, workers):
        target = TARGETS.get(count, TARGETS[8])
        floor, engine = results[f"floor_{count}"], results[f"engine_{count}"]
        ratio = medians[f"engine_{count}"] / medians[f"floor_{count}"]
        paired = statistics.median(e / f for e, f in zip(engine, floor, strict=True))
        verdicts[str(count)] = {
            "target_ratio": target,
            "ratio_engine_to_floor": round(ratio, 3),
            "paired_ratio_engine_to_floor": round(paired, 3),
            "within_target": ratio >= target,
        }
    floors = {line.key: f"floor_{line.workers}" for line in lines}
    return {
        "benchmark": "postgres_sagas",
        "unit": "sagas per second (5 no-op steps each; each worker sequential)",
        "workers": workers,
        "worker_kind": "processes",
        "seconds_per_repeat": seconds,
        "repeats": repeats,
        "targets": verdicts,
        "postgresql": server,
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlalchemy": version("sqlalchemy"),
            "psycopg": version("psycopg"),
            "attrs": version("attrs"),
            "cattrs": version("cattrs"),
        },
        "results": {
            line.key: {
                "description": line.description,
                "workers": line.workers,
                "commits_per_saga": COMMITS_PER_SAGA,
                "median_sagas_per_s": round(medians[line.key], 1),
                "min_sagas_per_s": round(min(results[line.key]), 1),
                "max_sagas_per_s": round(max(results[line.key]), 1),
                "median_commits_per_s": round(medians[line.key] * COMMITS_PER_SAGA),
                "median_us_per_saga_per_worker": round(1e6 * line.workers / medians[line.key], 1),
                "ratio_to_floor": round(medians[line.key] / medians[floors[line.key]], 3),
                "median_client_cpu_us_per_saga": round(statistics.median(cpu[line.key]), 1),
                "repeats_sagas_per_s": [round(value, 1) for value in results[line.key]],
            }
            for line in lines
        },
    }


def show(document: dict[str, Any], console: Console) -> None:
    """Print the figures as a table."""
    server = document["postgresql"]
    table = Table(
        title="5-step sagas on PostgreSQL, each worker one saga after another",
        caption=f"median of {document['repeats']} repeats x {document['seconds_per_repeat']:g} s; "
        f"workers are processes; PostgreSQL {server['version']}, "
        f"synchronous_commit={server['synchronous_commit']}",
    )
    table.add_column("variant", no_wrap=True)
    table.add_column("commits", justify="right")
    table.add_column("sagas/s", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("µs/saga/worker", justify="right")
    table.add_column("÷floor", justify="right")
    table.add_column("client CPU µs/saga", justify="right")
    for result in document["results"].values():
        table.add_row(
            result["description"],
            str(result["commits_per_saga"]),
            f"{result['median_sagas_per_s']:,.0f}",
            f"{result['min_sagas_per_s']:,.0f}",
            f"{result['max_sagas_per_s']:,.0f}",
            f"{result['median_us_per_saga_per_worker']:,.0f}",
            f"{result['ratio_to_floor']:.2f}",
            f"{result['median_client_cpu_us_per_saga']:,.0f}",
        )
    console.print(table)
    for count, verdict in document["targets"].items():
        met = "[green]met[/]" if verdict["within_target"] else "[red]missed[/]"
        console.print(
            f"target with {count} worker(s): engine >= {verdict['target_ratio']:.0%} of the "
            f"psycopg floor: {met} ({verdict['ratio_engine_to_floor']:.0%}; median of the "
            f"per-repeat ratios {verdict['paired_ratio_engine_to_floor']:.0%})"
        )
    env = document["environment"]
    console.print(
        f"[dim]{env['implementation']} {env['python']}, psycopg {env['psycopg']}, "
        f"SQLAlchemy {env['sqlalchemy']} on {env['platform']}, {env['cpus']} CPUs[/]"
    )


def server_settings(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        settings = {
            name: str(connection.exec_driver_sql(f"SHOW {name}").scalar())
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }
    engine.dispose()
    settings["version"] = settings.pop("server_version")
    return settings


# -- where the time goes ---------------------------------------------------------------------------


class _NoWrites(SqlStore):
    """A store that writes nothing: what is left of a saga is the engine's own work."""

    def insert(self, *args: Any, **kwargs: Any) -> None:
        pass

    def transition(self, *args: Any, **kwargs: Any) -> None:
        pass


def _interleaved_us(runs: dict[str, Runner], calls: int, repeats: int = 5) -> dict[str, float]:
    """Median µs per call of each runner, over ``repeats`` loops of ``calls``, interleaved."""
    for run in runs.values():
        for _ in range(max(20, calls // 5)):
            run()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            for _ in range(calls):
                run()
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def _trace(connection: Any, run: Runner, sagas: int, directory: Path) -> Counter[str]:
    """The protocol messages ``connection`` sends while ``run`` runs ``sagas`` times."""
    path = directory / f"trace-{uuid.uuid4().hex}.txt"
    with path.open("w") as file:
        connection.pgconn.trace(file.fileno())
        connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        for _ in range(sagas):
            run()
        connection.pgconn.untrace()
    sent: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) > 2 and fields[0] == "F":
            sent[fields[2]] += 1
    return sent


def _round_trips(sent: Counter[str], sagas: int) -> float:
    """Waits for the server per saga: each simple query and each ``Sync`` is one."""
    return (sent["Query"] + sent["Sync"]) / sagas


def commit_shapes(info: str, commits: int = 1000) -> dict[str, float]:
    """µs per commit of one transition (compare-and-set UPDATE + one history row), by shape.

    - ``floor``: ``execute`` UPDATE, ``execute`` INSERT, ``commit()`` (4 round trips);
    - ``executemany``: the INSERT through ``executemany`` of one row (a psycopg pipeline);
    - ``pipeline``: the floor's statements in a psycopg pipeline (1 round trip);
    - ``one statement``: ``WITH moved AS (UPDATE ... RETURNING id) INSERT ... SELECT
      ... FROM moved`` in autocommit (1 round trip, atomic; no row inserted = fenced),
      as the store writes a transition on PostgreSQL.
    """
    connection = psycopg.connect(info)
    auto = psycopg.connect(info, autocommit=True)
    history_columns = [c for c in history.columns if c.name != "id"]
    names = ", ".join(c.name for c in history_columns)
    marks = ", ".join(["%s"] * len(history_columns))
    insert_history = f"INSERT INTO statesaga_history ({names}) VALUES ({marks})"
    assigns = (
        "state = %s, status = %s, context = %s, machine = %s, error = %s, output = %s, "
        "attempt = %s, due_at = %s, lease_owner = %s, lease_expires_at = %s, updated_at = %s, "
        "version = version + 1"
    )
    update = (
        f"UPDATE statesaga_instances SET {assigns} WHERE id = %s AND version = %s AND epoch = %s"
    )
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    casts = ", ".join(f"%s::{c.type.compile(dialect=dialect)}" for c in history_columns)
    one_statement = (
        f"WITH moved AS ({update} RETURNING id) "
        f"INSERT INTO statesaga_history ({names}) SELECT {casts} FROM moved"
    )
    instance_id = uuid.uuid4().hex
    now = time.time()
    columns = [c.name for c in instances.columns]
    row = dict.fromkeys(columns)
    row.update(
        id=instance_id, saga=FiveSteps.name, saga_version=1, graph_hash="0" * 16,
        correlation_id=instance_id, state="s0", status="running", input="{}", context="{}",
        machine=machine_json(0), attempt=1, version=1, epoch=1, created_at=now, updated_at=now,
    )  # fmt: skip
    connection.execute(
        f"INSERT INTO statesaga_instances ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})",
        [row[c] for c in columns],
    )
    connection.commit()
    version = [1]
    machine = machine_json(1)

    def values() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        now, current = time.time(), version[0]
        version[0] += 1
        return (
            ("s1", "running", "{}", machine, None, None, 1, None, "bench", now + 30, now,
             instance_id, current, 1),
            (instance_id, current + 1, "forward", "t1", "t1", "s0", "s1", 1, None, None, 1,
             instance_id, now, now),
        )  # fmt: skip

    cursor = connection.cursor()
    auto_cursor = auto.cursor()

    def floor() -> None:
        update_params, history_params = values()
        cursor.execute(update, update_params)
        cursor.execute(insert_history, history_params)
        connection.commit()

    def many() -> None:
        update_params, history_params = values()
        cursor.execute(update, update_params)
        cursor.executemany(insert_history, [history_params])
        connection.commit()

    def pipelined() -> None:
        update_params, history_params = values()
        with connection.pipeline():
            cursor.execute(update, update_params)
            cursor.execute(insert_history, history_params)
            connection.commit()

    def single() -> None:
        update_params, history_params = values()
        auto_cursor.execute(one_statement, (*update_params, *history_params))
        assert auto_cursor.rowcount == 1, "fenced"

    try:
        return _interleaved_us(
            {"floor": floor, "executemany": many, "pipeline": pipelined, "one statement": single},
            commits,
        )
    finally:
        connection.close()
        auto.close()


def profile(url: str, engine_schema: str, floor_schema: str, console: Console) -> dict[str, Any]:
    """Where a saga's time goes: round trips, Python, the store's hot path, cProfile."""
    engine_url = schema_url(url, engine_schema)
    floor_info = conninfo(url, floor_schema)
    sagas = 500
    engine_run, engine_close, engine = engine_runner(engine_url)
    prototype_run, prototype_close, _ = engine_runner(engine_url, prototype=True)
    floor_run, floor_close, floor_connection = floor_runner(floor_info)
    one_run, one_close, one_connection = floor_runner(floor_info, one_statement=True)
    idle = Engine(_NoWrites(engine_url), sagas=[FiveSteps])
    payload = Nothing()

    def idle_run() -> None:
        idle.start(FiveSteps, payload)

    try:
        with tempfile.TemporaryDirectory(prefix="statesaga-bench-") as tmp:
            engine_run()
            store: Any = engine.store
            one_run()
            sent = {
                "engine": _trace(_hot_raw(store), engine_run, 50, Path(tmp)),
                "floor": _trace(floor_connection, floor_run, 50, Path(tmp)),
                "psycopg, 1 statement/commit": _trace(one_connection, one_run, 50, Path(tmp)),
            }
        console.print("\n[bold]Protocol messages sent per saga (libpq trace, 50 sagas)[/]")
        table = Table()
        table.add_column("message")
        for name in sent:
            table.add_column(name, justify="right")
        for message in sorted(set().union(*sent.values())):
            table.add_row(message, *(f"{counts[message] / 50:g}" for counts in sent.values()))
        trips = {name: _round_trips(counts, 50) for name, counts in sent.items()}
        table.add_row("round trips", *(f"{value:g}" for value in trips.values()))
        console.print(table)

        per_saga = _interleaved_us(
            {
                "floor": floor_run,
                "psycopg, 1 statement/commit": one_run,
                "engine": engine_run,
                "engine (1 row: execute)": prototype_run,
                "engine, no writes": idle_run,
            },
            sagas,
        )
        table = Table(title=f"One worker, µs per saga (median of 5 x {sagas}, interleaved)")
        table.add_column("variant")
        table.add_column("µs/saga", justify="right")
        table.add_column("÷floor (sagas/s)", justify="right")
        for name, us in per_saga.items():
            table.add_row(name, f"{us:,.0f}", f"{per_saga['floor'] / us:.2f}")
        console.print(table)

        shapes = commit_shapes(floor_info)
        table = Table(title="One transition's commit, by shape (median of 5 x 1000, interleaved)")
        table.add_column("shape")
        table.add_column("µs/commit", justify="right")
        table.add_column("÷floor", justify="right")
        for name, us in shapes.items():
            table.add_row(name, f"{us:,.0f}", f"{us / shapes['floor']:.2f}")
        console.print(table)

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(sagas):
            engine_run()
        profiler.disable()
        for order in ("tottime", "cumulative"):
            console.print(f"\n[bold]cProfile of {sagas} sagas through Engine, by {order}[/]")
            sys.stdout.flush()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.strip_dirs().sort_stats(order).print_stats(25)
    finally:
        engine_close()
        prototype_close()
        floor_close()
        one_close()
        idle.close()
    return {
        "messages_per_saga": {
            name: {k: v / 50 for k, v in sorted(counts.items())} for name, counts in sent.items()
        },
        "round_trips_per_saga": trips,
        "us_per_saga_1_worker": {k: round(v, 1) for k, v in per_saga.items()},
        "us_per_commit_by_shape": {k: round(v, 1) for k, v in shapes.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument("--workers", type=int, default=8, help="the many-workers case (8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant and repeat (2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--profile", action="store_true", help="also profile the engine")
    parser.add_argument(
        "--one-statement",
        action="store_true",
        help="also run plain psycopg writing each commit as one autocommitted statement, "
        "the shape the engine uses on PostgreSQL (a reference beside the floor)",
    )
    parser.add_argument(
        "--prototype",
        action="store_true",
        help="also run the engine with its single history row inserted by execute, "
        "not executemany (a suggested change, measured without editing the package)",
    )
    args = parser.parse_args(argv)
    if args.workers < 2 or args.seconds <= 0 or args.repeats < 3:
        parser.error("--workers must be at least 2, --seconds positive, --repeats at least 3")

    console = Console(width=max(Console().width, 120))
    tag = f"statesaga_bench_{os.getpid()}"
    engine_schema, floor_schema = f"{tag}_engine", f"{tag}_floor"
    with schemas(args.url, [engine_schema, floor_schema]):
        engine_url = schema_url(args.url, engine_schema)
        check(engine_url)
        lines = variants(args.workers, args.prototype, args.one_statement)
        pool = Workers(
            args.workers,
            engine_url,
            conninfo(args.url, floor_schema),
            args.prototype,
            args.one_statement,
        )
        try:
            results, cpu = measure(pool, lines, args.seconds, args.repeats)
        finally:
            pool.close()
        document = summary(
            results, cpu, lines, args.workers, args.seconds, args.repeats, server_settings(args.url)
        )
        show(document, console)
        if args.profile:
            document["profile"] = profile(args.url, engine_schema, floor_schema, console)
        if args.json is not None:
            args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
