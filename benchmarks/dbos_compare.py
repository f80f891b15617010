"""The 5-step saga through statesaga and through DBOS Transact, in the same process and run.

DBOS Transact (``pip install dbos``, in the ``bench`` dependency group) is the
closest Python peer: durable workflows whose steps are checkpointed in a
system database. The same workflow runs on both: five steps that do nothing
(``benchmarks/five_steps.py`` for statesaga; a ``@DBOS.workflow()`` calling a
``@DBOS.step()`` five times for DBOS), one run after another, each to
completion. Each side writes into a database of its own on the same server:
SQLite files side by side in one temporary directory (WAL on both), or two
PostgreSQL schemas on 127.0.0.1, created for the run and dropped after it.

Repeats alternate between the two (``--seconds`` each), so that a noisy
neighbour slows both alike; the figure is the median of the repeats, and
the ratio is taken repeat by repeat.

Usage::

    python benchmarks/dbos_compare.py                       # SQLite and PostgreSQL
    python benchmarks/dbos_compare.py --backends sqlite --repeats 9 --json dbos.json
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from bench_common import (
    DEFAULT_POSTGRES,
    console,
    database,
    environment,
    median,
    table,
    write_json,
)
from five_steps import STEPS, FiveSteps, Nothing

from statesaga import Engine, Status


def statesaga_runner(url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    engine = Engine(url, sagas=[FiveSteps])
    payload = Nothing()
    if engine.start(FiveSteps, payload).status is not Status.COMPLETED:
        raise AssertionError("the statesaga run did not complete")

    def run() -> None:
        engine.start(FiveSteps, payload)

    return run, engine.close


def dbos_runner(
    kind: str, url: str, postgres: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """DBOS launched on its own database: a SQLite file beside ``url``, or a schema of its own."""
    from dbos import DBOS, DBOSConfig

    schema = None
    if kind == "sqlite":
        folder = os.path.dirname(sa.make_url(url).database or "")
        system_url = f"sqlite:///{os.path.join(folder, 'dbos.sqlite')}"
    else:
        schema = f"bench_dbos_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        system_url = postgres.replace("postgresql+psycopg://", "postgresql://")
    config: DBOSConfig = {
        "name": "bench-five-steps",
        "system_database_url": system_url,
        "sys_db_pool_size": 4,  # the PostgreSQL server is shared
        "log_level": "WARNING",
        "enable_otlp": False,
    }
    if schema is not None:
        config["dbos_system_schema"] = schema
    DBOS(config=config)

    @DBOS.step()
    def noop() -> None:
        """A step that does nothing."""

    @DBOS.workflow()
    def five_steps() -> int:
        for _ in range(STEPS):
            noop()
        return STEPS

    DBOS.launch()
    if five_steps() != STEPS:
        raise AssertionError("the DBOS workflow did not complete")

    def run() -> None:
        five_steps()

    def close() -> None:
        DBOS.destroy(destroy_registry=True)
        if schema is not None:
            admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.dispose()

    return run, close


def rate(run: Callable[[], None], seconds: float) -> float:
    """Runs per second, sequentially, for about ``seconds``."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        run()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def compare(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    ours, close_ours = statesaga_runner(url)
    theirs, close_theirs = dbos_runner(kind, url, args.postgres)
    try:
        rate(ours, 0.5)  # warm both
        rate(theirs, 0.5)
        repeats: list[tuple[float, float]] = []
        for _ in range(args.repeats):
            repeats.append((rate(ours, args.seconds), rate(theirs, args.seconds)))
            console.print(
                f"  {kind}: statesaga {repeats[-1][0]:7.1f}/s  DBOS {repeats[-1][1]:6.1f}/s"
            )
    finally:
        close_theirs()
        close_ours()
    return {
        "backend": kind,
        "statesaga_per_second": median([r[0] for r in repeats]),
        "dbos_per_second": median([r[1] for r in repeats]),
        "ratio": median([r[0] / r[1] for r in repeats]),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per repeat and side")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    results = []
    for kind in args.backends.split(","):
        with database(kind, args.postgres, "bench_vs_dbos") as url:
            results.append(compare(kind, url, args))
    table(
        "5-step saga, sequential runs to completion (median of repeats)",
        ["backend", "statesaga /s", "DBOS /s", "statesaga ÷ DBOS"],
        [
            (r["backend"], r["statesaga_per_second"], r["dbos_per_second"], f"{r['ratio']:.1f}x")
            for r in results
        ],
    )
    write_json(args.json, {"environment": environment(["dbos"]), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
