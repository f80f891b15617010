"""Sagas per second through ``Engine`` on a SQLite file, beside the raw ``sqlite3`` floor.

A 5-step saga of no-op steps (``read_only=True``, returning ``None``) is run
to completion, one saga after another, on a SQLite file in WAL mode with
``synchronous=NORMAL`` (the store's default). The engine commits once to
start a saga (instance row + START history row) and once per step (the
instance's compare-and-set UPDATE + one history row): 6 commits per saga.

The floor is plain ``sqlite3`` doing exactly those commits in the same run:
``BEGIN IMMEDIATE``, INSERT instance + INSERT history, ``COMMIT``; then, per
step, ``BEGIN IMMEDIATE``, UPDATE instance + INSERT history, ``COMMIT``; into
the same tables and indexes (a database migrated by the store), with
payloads of the same size, prepared once. What separates the engine from
the floor is therefore the engine's own work: the interpreter, building
rows, (de)serialising, and the lock calls of the variants. A reference line,
``sqlite3, engine's SQL``, makes the same commits with the engine's own UPDATE,
which leaves the indexed columns that did not change (status, due time, lease
owner, a lease renewed a moment ago) out of its SET list:

- ``engine``: ``Engine(url)``, runs without an entity key (no lock calls);
- ``engine+key``: each run on its own entity key (the unique open-instance
  index guards it; no lock calls);
- ``InProcessLocks``: an entity lease in memory per run;
- ``SqlLocks``: an entity lease in the store's database per run (2 more
  commits per saga: acquire and release).

Every variant writes to its own database file. After a warm-up, each
repeat times ``--sagas`` sagas per variant, variants interleaved repeat by
repeat so that a noisy neighbour slows all of them alike; the figure
reported is the median of the repeats. Garbage collection stays on: it is
part of what a saga costs.

Usage::

    python benchmarks/sqlite_sagas.py                   # a table
    python benchmarks/sqlite_sagas.py --sagas 2000      # more sagas per repeat
    python benchmarks/sqlite_sagas.py --json out.json   # and the figures as JSON
    python benchmarks/sqlite_sagas.py --profile         # and where the engine's time goes

The target: the engine at no less than half the floor (``TARGET_RATIO``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from five_steps import STEPS, FiveSteps, Nothing, instance_values, machine_json

from statesaga import Engine, Status
from statesaga.locks import InProcessLocks, SqlLocks
from statesaga.store import SqlStore

TARGET_RATIO = 0.5
COMMITS_PER_SAGA = 1 + STEPS


# -- the runners: each returns a function that runs n sagas ---------------------------------

Runner = Callable[[int], None]


@attrs.define
class Variant:
    """One way of running sagas: its runner, commits per saga, and how to close it."""

    description: str
    commits: int
    run: Runner
    close: Callable[[], None]


def engine_variant(path: Path, locks: str | None, keyed: bool) -> Variant:
    """Sagas through ``Engine`` on the SQLite file ``path``."""
    store = SqlStore(f"sqlite:///{path}")
    lock_impl: Any = None
    if locks == "memory":
        lock_impl = InProcessLocks()
    elif locks == "sql":
        lock_impl = SqlLocks(store)
    engine = Engine(store, sagas=[FiveSteps], locks=lock_impl)
    start = engine.start
    prefix = uuid.uuid4().hex[:8]
    counter = iter(range(10**12))
    payload = Nothing()

    def run(n: int) -> None:
        if keyed:
            for _ in range(n):
                start(FiveSteps, payload, key=f"bench:{prefix}:{next(counter)}")
        else:
            for _ in range(n):
                start(FiveSteps, payload)

    # check it measures what it claims: a completed run, one commit per history row
    done = start(FiveSteps, payload, key=f"check:{prefix}" if keyed else None)
    assert done.status is Status.COMPLETED, done
    history = engine.history(done.id)
    assert len(history) == COMMITS_PER_SAGA, history
    assert [h.version for h in history] == list(range(1, COMMITS_PER_SAGA + 1)), history

    names = {
        None: "engine+key" if keyed else "engine",
        "memory": "InProcessLocks",
        "sql": "SqlLocks",
    }
    return Variant(
        names[locks],
        COMMITS_PER_SAGA + (2 if locks == "sql" else 0),
        run,
        engine.close,
    )


def floor_variant(path: Path, lean: bool = False) -> Variant:
    """The same commits through plain ``sqlite3``, into the store's own tables.

    ``lean``: each step's UPDATE in the engine's own shape, which leaves the
    indexed columns that did not change (status, due time, lease owner, a lease
    renewed a moment ago) out of its SET list, so no index entry is rewritten.
    """
    SqlStore(f"sqlite:///{path}").close()  # the same schema, indexes included
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    instance_columns = [
        row[1] for row in connection.execute("PRAGMA table_info(statesaga_instances)")
    ]
    history_columns = [
        row[1]
        for row in connection.execute("PRAGMA table_info(statesaga_history)")
        if row[1] != "id"
    ]
    insert_instance = (
        f"INSERT INTO statesaga_instances ({', '.join(instance_columns)}) "
        f"VALUES ({', '.join('?' * len(instance_columns))})"
    )
    insert_history = (
        f"INSERT INTO statesaga_history ({', '.join(history_columns)}) "
        f"VALUES ({', '.join('?' * len(history_columns))})"
    )
    update_instance = (
        "UPDATE statesaga_instances SET state = ?, status = ?, context = ?, machine = ?, "
        "error = ?, output = ?, attempt = ?, due_at = ?, lease_owner = ?, "
        "lease_expires_at = ?, updated_at = ?, version = version + 1 "
        "WHERE id = ? AND version = ? AND epoch = ?"
    )
    # the engine's shape: a step that keeps the status, due time and lease sets neither
    update_lean = (
        "UPDATE statesaga_instances SET state = ?, context = ?, machine = ?, error = ?, "
        "output = ?, attempt = ?, updated_at = ?, version = version + 1 "
        "WHERE id = ? AND version = ? AND epoch = ?"
    )
    update_last = (  # the last step ends the run: status and lease change
        "UPDATE statesaga_instances SET state = ?, status = ?, context = ?, machine = ?, "
        "error = ?, output = ?, attempt = ?, lease_owner = ?, lease_expires_at = ?, "
        "updated_at = ?, version = version + 1 WHERE id = ? AND version = ? AND epoch = ?"
    )
    owner = f"bench:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    machines = [machine_json(seq) for seq in range(STEPS + 1)]
    execute = connection.execute

    def one_saga() -> None:
        # what the engine writes, with the same sizes; the ids are fresh per saga
        instance_id = uuid.uuid4().hex
        now = time.time()
        values = instance_values(instance_id, now, owner)
        execute("BEGIN IMMEDIATE")
        execute(insert_instance, [values.get(c) for c in instance_columns])
        execute(
            insert_history,
            (instance_id, 1, "start", None, None, "s0", "s0", 0, None, None, 1, instance_id,
             now, now),
        )  # fmt: skip
        execute("COMMIT")
        for seq in range(1, STEPS + 1):
            last = seq == STEPS
            now = time.time()
            execute("BEGIN IMMEDIATE")
            if not lean:
                execute(
                    update_instance,
                    (f"s{seq}", "completed" if last else "running", "{}", machines[seq], None,
                     None, 0 if last else 1, None, None if last else owner,
                     None if last else now + 30, now, instance_id, seq, 1),
                )  # fmt: skip
            elif last:
                execute(
                    update_last,
                    (f"s{seq}", "completed", "{}", machines[seq], None, None, 0, None, None,
                     now, instance_id, seq, 1),
                )  # fmt: skip
            else:
                execute(
                    update_lean,
                    (f"s{seq}", "{}", machines[seq], None, None, 1, now, instance_id, seq, 1),
                )  # fmt: skip
            execute(
                insert_history,
                (instance_id, seq + 1, "forward", f"t{seq}", f"t{seq}", f"s{seq - 1}",
                 f"s{seq}", 1, None, None, 1, instance_id, now, now),
            )  # fmt: skip
            execute("COMMIT")

    def run(n: int) -> None:
        for _ in range(n):
            one_saga()

    name = "sqlite3, engine's SQL" if lean else "sqlite3 floor"
    return Variant(name, COMMITS_PER_SAGA, run, connection.close)


VARIANTS: dict[str, Callable[[Path], Variant]] = {
    "floor": floor_variant,
    "floor_lean": lambda path: floor_variant(path, lean=True),
    "engine": lambda path: engine_variant(path, None, keyed=False),
    "engine_key": lambda path: engine_variant(path, None, keyed=True),
    "in_process_locks": lambda path: engine_variant(path, "memory", keyed=True),
    "sql_locks": lambda path: engine_variant(path, "sql", keyed=True),
}


def measure(
    sagas: int, repeats: int, directory: Path
) -> tuple[dict[str, list[float]], dict[str, Variant]]:
    """Sagas per second of every variant, per repeat, interleaved."""
    variants = {name: make(directory / f"{name}.db") for name, make in VARIANTS.items()}
    try:
        for variant in variants.values():  # warm up: caches, generated code, the files
            variant.run(max(20, sagas // 5))
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, variant in variants.items():
                started = time.perf_counter()
                variant.run(sagas)
                results[name].append(sagas / (time.perf_counter() - started))
    finally:
        for variant in variants.values():
            variant.close()
    return results, variants


def summary(
    results: dict[str, list[float]], variants: dict[str, Variant], sagas: int, repeats: int
) -> dict[str, Any]:
    """The figures as a JSON-ready document."""
    medians = {name: statistics.median(values) for name, values in results.items()}
    floor = medians["floor"]
    # each repeat's variants ran back to back: their ratio to that repeat's floor is
    # steadier than the ratio of medians when the machine's speed drifts
    paired = {
        name: statistics.median(v / f for v, f in zip(values, results["floor"], strict=True))
        for name, values in results.items()
    }
    best_floor = max(results["floor"])
    return {
        "benchmark": "sqlite_sagas",
        "unit": "sagas per second (5 no-op steps each, sequential)",
        "target_ratio": TARGET_RATIO,
        "ratio_engine_to_floor": round(medians["engine"] / floor, 3),
        "paired_ratio_engine_to_floor": round(paired["engine"], 3),
        # beside plain sqlite3 sending the engine's own statements (see floor_variant)
        "ratio_engine_to_engine_sql": round(medians["engine"] / medians["floor_lean"], 3),
        "within_target": medians["engine"] / floor >= TARGET_RATIO,
        "sagas_per_repeat": sagas,
        "repeats": repeats,
        "sqlite": {
            "journal_mode": "WAL",
            "synchronous": "NORMAL",
            "version": sqlite3.sqlite_version,
        },
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlalchemy": version("sqlalchemy"),
            "attrs": version("attrs"),
            "cattrs": version("cattrs"),
        },
        "results": {
            name: {
                "description": variants[name].description,
                "commits_per_saga": variants[name].commits,
                "median_sagas_per_s": round(medians[name], 1),
                "min_sagas_per_s": round(min(values), 1),
                "max_sagas_per_s": round(max(values), 1),
                "median_us_per_saga": round(1e6 / medians[name], 1),
                "ratio_to_floor": round(medians[name] / floor, 3),
                "paired_ratio_to_floor": round(paired[name], 3),
                "best_ratio_to_floor": round(max(values) / best_floor, 3),
                "repeats_sagas_per_s": [round(value, 1) for value in values],
            }
            for name, values in results.items()
        },
    }


def show(document: dict[str, Any], console: Console) -> None:
    """Print the figures as a table."""
    table = Table(
        title="5-step sagas, one after another, SQLite WAL synchronous=NORMAL",
        caption=f"median of {document['repeats']} repeats x {document['sagas_per_repeat']} "
        "sagas; best ÷: the best repeat over the floor's best",
    )
    table.add_column("variant", no_wrap=True)
    table.add_column("commits", justify="right")
    table.add_column("sagas/s", justify="right")
    table.add_column("best", justify="right")
    table.add_column("µs/saga", justify="right")
    table.add_column("÷floor", justify="right")
    table.add_column("best÷", justify="right")
    for result in document["results"].values():
        table.add_row(
            result["description"],
            str(result["commits_per_saga"]),
            f"{result['median_sagas_per_s']:,.0f}",
            f"{result['max_sagas_per_s']:,.0f}",
            f"{result['median_us_per_saga']:,.0f}",
            f"{result['ratio_to_floor']:.2f}",
            f"{result['best_ratio_to_floor']:.2f}",
        )
    console.print(table)
    verdict = "[green]met[/]" if document["within_target"] else "[red]missed[/]"
    console.print(
        f"target: engine >= {TARGET_RATIO:.0%} of the sqlite3 floor: {verdict} "
        f"({document['ratio_engine_to_floor']:.0%}; median of the per-repeat ratios "
        f"{document['paired_ratio_engine_to_floor']:.0%}); beside plain sqlite3 sending "
        f"the engine's own statements: {document['ratio_engine_to_engine_sql']:.0%}"
    )
    env = document["environment"]
    console.print(
        f"[dim]{env['implementation']} {env['python']}, SQLite {document['sqlite']['version']}, "
        f"SQLAlchemy {env['sqlalchemy']} on {env['platform']}, {env['cpus']} CPUs[/]"
    )


class _NoWrites(SqlStore):
    """A store that writes nothing: what is left of a saga is the engine's own work."""

    def insert(self, *args: Any, **kwargs: Any) -> None:
        pass

    def transition(self, *args: Any, **kwargs: Any) -> None:
        pass


def engine_only(sagas: int, repeats: int, directory: Path) -> list[float]:
    """µs per saga through ``Engine`` over a store that writes nothing, per repeat."""
    engine = Engine(_NoWrites(f"sqlite:///{directory / 'nowrites.db'}"), sagas=[FiveSteps])
    payload = Nothing()
    try:
        for _ in range(max(20, sagas // 5)):
            engine.start(FiveSteps, payload)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(sagas):
                engine.start(FiveSteps, payload)
            timings.append((time.perf_counter() - started) / sagas * 1e6)
        return timings
    finally:
        engine.close()


def profile(sagas: int, repeats: int, directory: Path, console: Console, limit: int = 25) -> None:
    """Where the engine's time goes: its cost without writes, then cProfile on SQLite."""
    alone = engine_only(sagas, repeats, directory)
    console.print(
        f"\n[bold]Engine over a store that writes nothing:[/] "
        f"{statistics.median(alone):,.0f} µs per saga (median of {repeats} x {sagas}; "
        f"{statistics.median(alone) / COMMITS_PER_SAGA:,.1f} µs per transition)"
    )
    variant = engine_variant(directory / "profile.db", None, keyed=False)
    try:
        variant.run(max(20, sagas // 5))
        profiler = cProfile.Profile()
        profiler.enable()
        variant.run(sagas)
        profiler.disable()
    finally:
        variant.close()
    for order in ("tottime", "cumulative"):
        console.print(f"\n[bold]cProfile of {sagas} sagas through Engine on SQLite, by {order}[/]")
        sys.stdout.flush()
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=1000, help="sagas per repeat (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--profile", action="store_true", help="also profile the engine")
    parser.add_argument(
        "--dir", type=Path, help="where the database files go (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    if args.sagas < 1 or args.repeats < 3:
        parser.error("--sagas must be at least 1 and --repeats at least 3")

    console = Console()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="statesaga-bench-") as tmp:
        directory = Path(tmp)
        results, variants = measure(args.sagas, args.repeats, directory)
        document = summary(results, variants, args.sagas, args.repeats)
        show(document, console)
        if args.json is not None:
            args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {args.json}")
        if args.profile:
            profile(args.sagas, args.repeats, directory, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
