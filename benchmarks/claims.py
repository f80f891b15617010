"""What a claim costs as the backlog grows, and what an idle poll costs beside finished runs.

The store holds ``--finished`` completed runs (never due again) and, in
turn, 100, 10,000 and 100,000 due runs (half with an expired lease, half
released with a past due time). At each size it times ``SqlStore.claim_due``
of 10 runs (the claimed runs are given an already expired lease, so the
backlog stays the same size) and, beside it in the same loop, the claim
query as it was before (one ``OR`` of the three conditions, ``ORDER BY
due_at, id``, locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, then an
UPDATE of the ids it found, as ``claim_due`` did). With no run due it times an idle poll. On
PostgreSQL, ``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of both at
each size; on SQLite, ``EXPLAIN QUERY PLAN``.

Usage::

    python benchmarks/claims.py                      # SQLite and PostgreSQL, a table
    python benchmarks/claims.py --explain            # and the query plans
    python benchmarks/claims.py --sizes 100,10000 --finished 10000 --json claims.json
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import sqlalchemy as sa
from bench_common import DEFAULT_POSTGRES, console, database, environment, median, table
from bench_common import write_json as save
from five_steps import instance_values

from statesaga.store import SqlStore
from statesaga.store import claims as store_claims
from statesaga.store.inbox import pending_exists
from statesaga.store.schema import instances

LIMIT = 10


def before_query(now: float, limit: int) -> sa.Select[Any]:
    """The claim query as it was: an OR of three conditions over every run, sorted."""
    c = instances.c
    needs_work = sa.or_(
        sa.and_(c.lease_owner.is_not(None), c.lease_expires_at < now),
        sa.and_(c.lease_owner.is_(None), c.due_at <= now),
        sa.and_(c.lease_owner.is_(None), pending_exists(c.id)),
    )
    return sa.select(instances).where(needs_work).order_by(c.due_at, c.id).limit(limit)


def fill(engine: sa.Engine, count: int, now: float, kind: str) -> None:
    """Insert ``count`` runs: ``finished``, or ``due`` (alternately leased-expired and released)."""
    rows = []
    for index in range(count):
        row = instance_values(uuid.uuid4().hex, now - 3600, "crashed")
        row["machine"] = {"seq": 0}
        row["input"] = row["context"] = {}
        if kind == "finished":
            row.update(status="completed", state="s5", lease_owner=None, lease_expires_at=None)
        elif index % 2:
            row.update(lease_owner=None, lease_expires_at=None, due_at=now - 600 + index * 1e-3)
        else:
            row.update(lease_expires_at=now - 600 + index * 1e-3)
        rows.append(row)
        if len(rows) == 5000:
            _insert(engine, rows)
            rows = []
    _insert(engine, rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE statesaga_instances")


def _insert(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    if rows:
        with engine.begin() as connection:
            connection.execute(sa.insert(instances), rows)


def explain(engine: sa.Engine, query: Any) -> str:
    """The database's plan for ``query`` (executed and rolled back on PostgreSQL)."""
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    if engine.dialect.name == "postgresql":
        prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) "
    else:
        prefix = "EXPLAIN QUERY PLAN "
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(prefix + str(compiled)).all()
        connection.rollback()
    return "\n".join(str(row[-1]) for row in rows)


def time_before(engine: sa.Engine, now: float) -> float:
    """Seconds for a claim of 10 as ``claim_due`` made it before: the OR query, then UPDATE.

    Locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the claimed runs are left due
    again (an already expired lease), as in :func:`time_claim`.
    """
    query = before_query(now, LIMIT)
    if engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    started = time.perf_counter()
    with engine.begin() as connection:
        ids = [row.id for row in connection.execute(query)]
        if ids:
            connection.execute(
                sa.update(instances)
                .where(instances.c.id.in_(ids))
                .values(
                    epoch=instances.c.epoch + 1,
                    version=instances.c.version + 1,
                    lease_owner="bench",
                    lease_expires_at=now - 1,
                    updated_at=now,
                )
                .returning(instances)
            ).all()
    return time.perf_counter() - started


def time_claim(store: SqlStore, now: float) -> tuple[float, int]:
    """Seconds for ``claim_due`` of 10 runs, and how many it claimed (left due again)."""
    started = time.perf_counter()
    claimed = store.claim_due(now, LIMIT, "bench", now - 1)
    return time.perf_counter() - started, len(claimed)


def measure(kind: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    store = SqlStore(url, auto_migrate=kind == "sqlite")
    engine = store.engine
    now = time.time()
    results = []
    try:
        fill(engine, args.finished, now, "finished")
        have = 0
        for size in [0, *args.sizes]:
            fill(engine, size - have, now, "due")
            have = size
            before, after, claimed = [], [], 0
            for _ in range(args.repeats):
                before.append(time_before(engine, now))
                seconds, claimed = time_claim(store, now)
                after.append(seconds)
            result = {
                "backend": kind,
                "due": size,
                "finished": args.finished,
                "claimed": claimed,
                "before_ms": median(before) * 1000,
                "after_ms": median(after) * 1000,
                "before_repeats_ms": [s * 1000 for s in before],
                "after_repeats_ms": [s * 1000 for s in after],
            }
            if args.explain:
                result["plan_before"] = explain(engine, before_query(now, LIMIT))
                lock = kind != "sqlite"
                result["plan_after"] = explain(
                    engine, store_claims.claim_statement(now, LIMIT, "x", now - 1, None, lock=lock)
                )
                console.rule(f"{kind}: {size:,} due, {args.finished:,} finished")
                console.print("[bold]before[/bold]\n" + result["plan_before"])
                console.print("[bold]after (the claim statement)[/bold]\n" + result["plan_after"])
            results.append(result)
    finally:
        store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sizes", default="100,10000,100000", help="due runs, comma-separated")
    parser.add_argument("--finished", type=int, default=100_000, help="completed runs stored")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    for kind in args.backends.split(","):
        with database(kind, args.postgres, "bench_claims") as url:
            results += measure(kind, url, args)
    table(
        f"claim of {LIMIT} due runs beside {args.finished:,} finished runs (median ms)",
        [
            "backend",
            "due runs",
            "before: OR query + UPDATE",
            "after: one statement",
            "after ÷ before",
        ],
        [
            (r["backend"], r["due"], r["before_ms"], r["after_ms"], r["after_ms"] / r["before_ms"])
            for r in results
        ],
    )
    save(args.json, {"environment": environment(), "limit": LIMIT, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
