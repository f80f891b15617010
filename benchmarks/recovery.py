"""Recovery of stranded runs by 1 and by 4 worker processes, beside the rate they run fresh sagas.

A stranded run is what a crash leaves: the 5-step saga (``five_steps.py``)
started, its first step pending, its holder's lease expired. ``--runs``
(10,000) of them are written straight into the store, each a copy of a run
the engine itself started (same row, same history row, same graph hash),
with its lease set to have expired a minute ago. Then ``N`` worker
processes (spawned and warmed before timing), each with an ``Engine``,
call ``Engine.recover`` until nothing is left: the time to drain them all.
The runs are stranded and recovered in ``--rounds`` (5) parts, each followed
by as many fresh runs, so that a change in the machine's load falls on both.
Beside it, the same processes start ``--runs`` fresh sagas (a share each)
and run them to completion: the ratio of the two rates is what a restart
after an outage costs compared with normal traffic.

PostgreSQL by default (``--backend sqlite`` for a SQLite file): one schema
for the run, dropped after it; each worker holds one or two connections.

Usage::

    python benchmarks/recovery.py                      # 10,000 runs, 1 and 4 workers
    python benchmarks/recovery.py --runs 2000 --workers 1,2,4 --json recovery.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

import sqlalchemy as sa
from bench_common import DEFAULT_POSTGRES, console, database, environment, table
from bench_common import write_json as save
from five_steps import FiveSteps, Nothing

from statesaga import Engine, Status
from statesaga.store.schema import history, instances


def strand(url: str, count: int) -> None:
    """``count`` copies of a just-started run whose holder crashed a minute ago."""
    with Engine(url, sagas=[FiveSteps]) as engine:
        model = engine.start(FiveSteps, Nothing())  # a real run, for the exact row shape
    database = sa.create_engine(url, poolclass=sa.NullPool)
    with database.begin() as connection:
        row = connection.execute(sa.select(instances).where(instances.c.id == model.id)).one()
        first = connection.execute(
            sa.select(history).where(history.c.instance_id == model.id).order_by(history.c.id)
        ).first()
        assert first is not None
        now = time.time()
        template = row._asdict()
        template.update(
            state="s0", status="running", output=None, version=1, epoch=1,
            machine={"pending": "t1", "wake_at": None, "stack": [], "pivoted": False,
                     "seq": 0, "event": None},
            lease_owner="crashed-worker", lease_expires_at=now - 60, due_at=None,
        )  # fmt: skip
        start_row = {k: v for k, v in first._asdict().items() if k != "id"}
        for offset in range(0, count, 5000):
            rows, starts = [], []
            for _ in range(min(5000, count - offset)):
                instance_id = uuid.uuid4().hex
                rows.append({**template, "id": instance_id, "correlation_id": instance_id})
                starts.append({**start_row, "instance_id": instance_id, "version": 1})
            connection.execute(sa.insert(instances), rows)
            connection.execute(sa.insert(history), starts)
    database.dispose()


def worker(url: str, pipe: Connection) -> None:
    """A worker process: one ``Engine``; recovers or starts runs when told."""
    with Engine(url, sagas=[FiveSteps]) as engine:
        engine.start(FiveSteps, Nothing())  # warm: connections, compiled statements
        pipe.send("ready")
        while True:
            command, count = pipe.recv()
            if command == "stop":
                return
            started = time.perf_counter()
            done = 0
            if command == "recover":
                while batch := engine.recover(limit=1000):
                    done += sum(run.status is Status.COMPLETED for run in batch)
            else:
                for _ in range(count):
                    done += engine.start(FiveSteps, Nothing()).status is Status.COMPLETED
            pipe.send((done, time.perf_counter() - started))


def timed(pipes: list[Connection], command: str, counts: list[int]) -> tuple[int, float]:
    """Send ``command`` to every worker at once; runs completed and wall seconds."""
    started = time.perf_counter()
    for pipe, count in zip(pipes, counts, strict=True):
        pipe.send((command, count))
    answers = [pipe.recv() for pipe in pipes]
    return sum(done for done, _ in answers), time.perf_counter() - started


def measure(url: str, workers: int, runs: int, rounds: int = 5) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(workers):
        ours, theirs = context.Pipe()
        process = context.Process(target=worker, args=(url, theirs), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        for pipe in pipes:
            pipe.recv()  # ready
        # interleaved rounds, so a change in the machine's load falls on both sides alike
        recovered = fresh = 0
        recovery_seconds = fresh_seconds = 0.0
        for number in range(rounds):
            part = runs // rounds + (number < runs % rounds)
            strand(url, part)
            done, seconds = timed(pipes, "recover", [0] * workers)
            recovered, recovery_seconds = recovered + done, recovery_seconds + seconds
            shares = [part // workers + (i < part % workers) for i in range(workers)]
            done, seconds = timed(pipes, "start", shares)
            fresh, fresh_seconds = fresh + done, fresh_seconds + seconds
    finally:
        for pipe in pipes:
            pipe.send(("stop", 0))
        for process in processes:
            process.join(timeout=30)
    if recovered != runs or fresh != runs:
        raise AssertionError(f"recovered {recovered} and ran {fresh} of {runs}")
    result = {
        "workers": workers,
        "runs": runs,
        "recovery_seconds": recovery_seconds,
        "recovered_per_second": runs / recovery_seconds,
        "fresh_seconds": fresh_seconds,
        "fresh_per_second": runs / fresh_seconds,
    }
    result["recovery_over_fresh"] = result["recovered_per_second"] / result["fresh_per_second"]
    console.print(
        f"  {workers} worker(s): recovered {runs:,} in {recovery_seconds:.1f} s, "
        f"ran {runs:,} fresh in {fresh_seconds:.1f} s"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--runs", type=int, default=10_000, help="stranded runs to recover")
    parser.add_argument("--workers", default="1,4", help="worker processes, comma-separated")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds of recovery and fresh runs"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        with database(args.backend, args.postgres, "bench_recovery") as url:
            measured = measure(url, workers, args.runs, args.rounds)
            results.append({"backend": args.backend, **measured})
    table(
        f"recovery of {args.runs:,} stranded 5-step runs, beside fresh runs by the same workers",
        ["backend", "workers", "recovery s", "recovered/s", "fresh s", "fresh/s",
         "recovery ÷ fresh"],
        [(r["backend"], r["workers"], r["recovery_seconds"], r["recovered_per_second"],
          r["fresh_seconds"], r["fresh_per_second"], r["recovery_over_fresh"]) for r in results],
    )  # fmt: skip
    save(args.json, {"environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
