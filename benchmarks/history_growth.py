"""The 5-step saga's rate beside stores that already hold 100,000 (or 1,000,000) history rows.

One store per size, each filled before timing with completed runs of six
history rows each (``INSERT ... SELECT`` from ``generate_series`` on
PostgreSQL, a recursive CTE on SQLite), so the tables and their indexes
are as large as after that many transitions. Then the 5-step saga
(``five_steps.py``) runs sequentially through ``Engine.start`` on every
store, repeats interleaved, so that the ratio to the empty store is
measured side by side.

Usage::

    python benchmarks/history_growth.py                          # 0 and 100,000 rows
    python benchmarks/history_growth.py --sizes 0,100000,1000000 # and a million
    python benchmarks/history_growth.py --backends postgres --json growth.json
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from typing import Any

import sqlalchemy as sa
from bench_common import DEFAULT_POSTGRES, console, database, environment, median, table
from bench_common import write_json as save
from five_steps import FiveSteps, Nothing, machine_json

from statesaga import Engine

ROWS_PER_RUN = 6

_PG_SERIES = "SELECT i FROM generate_series(1, :runs) AS i"
_SQLITE_SERIES = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :runs) "
    "SELECT i FROM n"
)


def fill(url: str, rows: int) -> None:
    """Add ``rows`` history rows, six per completed run."""
    runs = rows // ROWS_PER_RUN
    if runs == 0:
        return
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    series = _PG_SERIES if engine.dialect.name == "postgresql" else _SQLITE_SERIES
    postgres = engine.dialect.name == "postgresql"
    machine = "CAST(:machine AS jsonb)" if postgres else ":machine"
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO statesaga_instances (id, saga, saga_version, graph_hash, "
                "correlation_id, state, status, input, context, machine, attempt, version, "
                "epoch, created_at, updated_at) "
                f"SELECT 'old-' || i, 'old-saga', 1, 'h', 'old-' || i, 's5', 'completed', "
                f"'{{}}', '{{}}', {machine}, 1, 6, 1, i, i FROM ({series}) AS s"
            ),
            {"runs": runs, "machine": machine_json(5)},
        )
        connection.execute(
            sa.text(
                "INSERT INTO statesaga_history (instance_id, version, kind, transition, step, "
                "from_state, to_state, attempt, epoch, correlation_id, started_at, finished_at) "
                "SELECT 'old-' || s.i, v.v, 'forward', 't', 'noop', 's', 's', 1, 1, "
                f"'old-' || s.i, s.i, s.i FROM ({series}) AS s "
                "CROSS JOIN (SELECT 1 AS v UNION ALL SELECT 2 UNION ALL SELECT 3 "
                "UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6) AS v"
            ),
            {"runs": runs},
        )
        if postgres:
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def rate(engine: Engine, seconds: float) -> float:
    payload = Nothing()
    count, started = 0, time.perf_counter()
    while True:
        engine.start(FiveSteps, payload)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed


def measure(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    with ExitStack() as stack:
        engines = {}
        for size in args.sizes:
            url = stack.enter_context(database(kind, args.postgres, "bench_history"))
            started = time.perf_counter()
            fill(url, size)
            console.print(
                f"  {kind}: {size:,} history rows in {time.perf_counter() - started:.1f} s"
            )
            engines[size] = stack.enter_context(Engine(url, sagas=[FiveSteps]))
        for engine in engines.values():
            rate(engine, 0.5)  # warm
        rates: dict[int, list[float]] = {size: [] for size in args.sizes}
        for _ in range(args.repeats):
            for size, engine in engines.items():
                rates[size].append(rate(engine, args.seconds))
    base = args.sizes[0]
    results = []
    for size in args.sizes:
        ratios = [r / b for r, b in zip(rates[size], rates[base], strict=True)]
        results.append(
            {"backend": kind, "history_rows": size, "per_second": median(rates[size]),
             "ratio_to_first": median(ratios), "repeats": rates[size]}
        )  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sizes", default="0,100000", help="history rows, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per repeat and store")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    for kind in args.backends.split(","):
        results += measure(kind, args)
    table(
        "5-step sagas per second beside stored history (median of interleaved repeats)",
        ["backend", "history rows", "sagas/s", f"÷ {args.sizes[0]:,} rows"],
        [(r["backend"], r["history_rows"], r["per_second"], r["ratio_to_first"]) for r in results],
    )
    save(args.json, {"environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
