"""Time per transition with a 1 MB context, beside the same saga with a tiny one.

A 5-step saga whose first step copies its input's payload into the context
(so every later transition rewrites the whole context: the store keeps it
whole, row by row) and whose other steps change a counter. Run one after
another through ``Engine.start`` on SQLite and PostgreSQL, interleaved with
the same saga carrying 10 bytes; the time per transition is the run's time
over its 6 commits (the start and 5 steps), and the extra cost of a megabyte
is the difference. ``tracemalloc`` then measures one run's peak memory,
as a multiple of the payload.

Usage::

    python benchmarks/big_context.py                    # 1 MB, SQLite and PostgreSQL
    python benchmarks/big_context.py --megabytes 4 --runs 10 --json big.json
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import attrs
from bench_common import DEFAULT_POSTGRES, console, database, environment, median, table
from bench_common import write_json as save

from statesaga import Engine, Saga, State, Status, StepContext

COMMITS = 6


@attrs.frozen
class Payload:
    """The saga's input: a blob of text."""

    blob: str


@attrs.frozen
class Carried:
    """The context: the blob, once the first step copied it, and a counter."""

    blob: str = ""
    steps: int = 0


Ctx = StepContext[Payload, Carried]


def take(ctx: Ctx) -> Carried:
    """Copy the payload into the context."""
    return Carried(ctx.input.blob, 1)


def count(ctx: Ctx) -> Carried:
    """Change the context a little: the store still writes all of it."""
    return attrs.evolve(ctx.data, steps=ctx.data.steps + 1)


class BigContext(Saga[Payload, Carried]):
    """s0 -> s5; every transition after the first rewrites the blob."""

    name = "bench-big-context"

    s0 = State(initial=True)
    s1 = State()
    s2 = State()
    s3 = State()
    s4 = State()
    s5 = State(final=True)
    t1 = s0.to(s1).run(take, read_only=True)
    t2 = s1.to(s2).run(count, read_only=True)
    t3 = s2.to(s3).run(count, read_only=True)
    t4 = s3.to(s4).run(count, read_only=True)
    t5 = s4.to(s5).run(count, read_only=True)


def one_run(engine: Engine, payload: Payload) -> float:
    started = time.perf_counter()
    run = engine.start(BigContext, payload)
    elapsed = time.perf_counter() - started
    if run.status is not Status.COMPLETED or run.data.steps != 5:
        raise AssertionError(f"the run ended {run.status} with {run.data.steps} steps")
    return elapsed


def measure(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.megabytes * 1024 * 1024)
    big, small = Payload("x" * size), Payload("x" * 10)
    with Engine(url, sagas=[BigContext], max_payload_bytes=None) as engine:
        one_run(engine, big)  # warm
        one_run(engine, small)
        big_times, small_times = [], []
        for _ in range(args.runs):
            big_times.append(one_run(engine, big))
            small_times.append(one_run(engine, small))
        tracemalloc.start()
        one_run(engine, big)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    big_ms, small_ms = median(big_times) / COMMITS * 1000, median(small_times) / COMMITS * 1000
    console.print(f"  {kind}: {big_ms:.1f} ms per transition with {args.megabytes} MB")
    return {
        "backend": kind,
        "megabytes": args.megabytes,
        "big_ms_per_transition": big_ms,
        "small_ms_per_transition": small_ms,
        "extra_ms_per_megabyte": (big_ms - small_ms) / args.megabytes,
        "peak_memory_over_payload": peak / size,
        "big_runs_s": big_times,
        "small_runs_s": small_times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20, help="runs of each saga, interleaved")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    results = []
    for kind in args.backends.split(","):
        with database(kind, args.postgres, "bench_big_context") as url:
            results.append(measure(kind, url, args))
    table(
        "time per transition (median ms), context of the given size beside 10 bytes",
        ["backend", "MB", "ms/transition", "10 bytes", "extra ms per MB", "peak memory ÷ payload"],
        [
            (
                r["backend"],
                r["megabytes"],
                r["big_ms_per_transition"],
                r["small_ms_per_transition"],
                r["extra_ms_per_megabyte"],
                f"{r['peak_memory_over_payload']:.1f}x",
            )
            for r in results
        ],
    )
    save(args.json, {"environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
