"""Memory per run in flight on the ``AsyncEngine``, and a process's memory over many sagas.

In flight: ``N`` runs started at once on one ``AsyncEngine`` (SQLite by
default), each parked inside its first step on an ``asyncio.Event``; once
all ``N`` are inside, the memory Python holds (``tracemalloc``, started just
before the runs) divided by ``N`` is the cost of a run in flight. The event
is then set and every run completes. RSS is reported beside it.

Sequential: ``--sagas`` 5-step sagas through ``Engine.start`` one after
another; the process's RSS is sampled every tenth of the way. Flat is
the goal: what one saga allocates is freed when it ends.

Usage::

    python benchmarks/memory.py                               # 1,000 and 10,000; 100,000 sagas
    python benchmarks/memory.py --in-flight 1000 --sagas 20000 --json memory.json
    python benchmarks/memory.py --postgres-in-flight          # the runs on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from typing import Any

import attrs
from bench_common import DEFAULT_POSTGRES, console, database, environment, table
from bench_common import write_json as save
from five_steps import FiveSteps, Nothing

from statesaga import Engine, Saga, State, Status, StepContext
from statesaga.aio import AsyncEngine


@attrs.frozen
class Order:
    """The parked saga's input."""

    number: int


@attrs.frozen
class Parked:
    """The parked saga's context."""

    released: bool = False


class Gate:
    """What the parked runs wait on, and how many are inside."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.inside = 0


async def wait_at_the_gate(ctx: StepContext[Order, Parked]) -> Parked:
    """Park inside the step until the gate opens."""
    gate = ctx.resource(Gate)
    gate.inside += 1
    await gate.event.wait()
    return Parked(True)


async def done(ctx: StepContext[Order, Parked]) -> None:
    """A second step, so the run has somewhere to go."""


class ParkedSaga(Saga[Order, Parked]):
    """Waits in its first step for the gate, then ends."""

    name = "bench-parked"

    s0 = State(initial=True)
    s1 = State()
    s2 = State(final=True)
    park = s0.to(s1).run(wait_at_the_gate, read_only=True)
    finish = s1.to(s2).run(done, read_only=True)


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def in_flight(url: str, count: int) -> dict[str, Any]:
    gate = Gate()
    engine = AsyncEngine(url, sagas=[ParkedSaga], resources=[gate])
    try:
        warm = asyncio.create_task(engine.start(ParkedSaga, Order(-1)))
        while gate.inside < 1:
            await asyncio.sleep(0.01)
        gate.event.set()
        await warm
        gate.event, gate.inside = asyncio.Event(), 0
        gc.collect()
        rss_before = rss_kb()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        tasks = [asyncio.create_task(engine.start(ParkedSaga, Order(n))) for n in range(count)]
        while gate.inside < count:
            await asyncio.sleep(0.05)
        parked_after = time.perf_counter() - started
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rss_held = rss_kb() - rss_before
        gate.event.set()
        runs = await asyncio.gather(*tasks)
        if any(run.status is not Status.COMPLETED for run in runs):
            raise AssertionError("a parked run did not complete")
    finally:
        engine.close()
    console.print(
        f"  {count:,} in flight: {held / count / 1024:.2f} KB each (parked in {parked_after:.1f} s)"
    )
    return {
        "in_flight": count,
        "traced_bytes_per_run": held / count,
        "rss_kb_per_run": rss_held / count,
        "seconds_to_park": parked_after,
    }


def sequential(url: str, sagas: int) -> dict[str, Any]:
    samples = []
    payload = Nothing()
    with Engine(url, sagas=[FiveSteps]) as engine:
        for _ in range(200):  # warm: connections, caches, compiled statements
            engine.start(FiveSteps, payload)
        gc.collect()
        samples.append((0, rss_kb()))
        step = max(1, sagas // 10)
        started = time.perf_counter()
        for n in range(1, sagas + 1):
            engine.start(FiveSteps, payload)
            if n % step == 0:
                samples.append((n, rss_kb()))
        elapsed = time.perf_counter() - started
    growth = samples[-1][1] - samples[1][1] if len(samples) > 2 else 0
    console.print(f"  {sagas:,} sagas: RSS {samples[0][1]:,} KB -> {samples[-1][1]:,} KB")
    return {"sagas": sagas, "seconds": elapsed, "rss_samples_kb": samples,
            "rss_growth_after_first_tenth_kb": growth}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--postgres-in-flight", action="store_true", help="park runs on PostgreSQL")
    parser.add_argument("--in-flight", default="1000,10000", help="runs at once, comma-separated")
    parser.add_argument("--sagas", type=int, default=100_000, help="sequential sagas (0: skip)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    kind = "postgres" if args.postgres_in_flight else "sqlite"
    parked = []
    for count in (int(c) for c in args.in_flight.split(",") if c):
        with database(kind, args.postgres, "bench_memory") as url:
            parked.append({"backend": kind, **asyncio.run(in_flight(url, count))})
    table(
        "memory per run in flight (AsyncEngine, parked inside a step)",
        ["backend", "runs in flight", "KB per run (tracemalloc)", "KB per run (RSS)", "s to park"],
        [(r["backend"], r["in_flight"], r["traced_bytes_per_run"] / 1024, r["rss_kb_per_run"],
          r["seconds_to_park"]) for r in parked],
    )  # fmt: skip
    steady = None
    if args.sagas:
        with database("sqlite", args.postgres, "bench_memory") as url:
            steady = sequential(url, args.sagas)
        table(
            f"process RSS over {args.sagas:,} sequential 5-step sagas (SQLite)",
            ["sagas run", "RSS KB"],
            steady["rss_samples_kb"],
        )
    save(args.json, {"environment": environment(), "in_flight": parked, "sequential": steady})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
