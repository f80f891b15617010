"""A saga whose steps are transactional: what its start costs, tree beside tree.

The saga has two no-op steps, both ``transactional=True`` (each writes its
transition in the step's own transaction). Since a run whose first step is
transactional is inserted in that step's transaction, it makes two commits
where it made three (the start's, then each step's). Each source tree (a
checkout of statesaga at some revision, e.g. ``git archive REV | tar -x -C
/tmp/rev``; ``.`` for this one) runs in processes of its own, the trees taking
turns; each process starts sagas one after another on a fresh store and
reports the median µs per saga of its repeats.

Usage::

    git archive HEAD~1 | tar -x -C /tmp/before
    python benchmarks/first_step.py /tmp/before .                      # SQLite
    python benchmarks/first_step.py /tmp/before . --backend postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def child(source: str, backend: str, sagas: int, repeats: int) -> dict[str, Any]:
    """One process's figure for the tree at ``source`` (imported from there)."""
    sys.path[:0] = [source, f"{source}/benchmarks"]
    from bench_common import DEFAULT_POSTGRES, database
    from five_steps import Nothing, noop

    import statesaga
    from statesaga import Engine, Saga, State

    if not statesaga.__file__ or not statesaga.__file__.startswith(str(Path(source).resolve())):
        raise SystemExit(f"statesaga was imported from {statesaga.__file__}, not {source}")

    class TwoInTransactions(Saga[Nothing, Nothing]):
        name = "bench-two-transactional"
        s0 = State(initial=True)
        s1 = State()
        s2 = State(final=True)
        t1 = s0.to(s1).run(noop, read_only=True, transactional=True)
        t2 = s1.to(s2).run(noop, read_only=True, transactional=True)

    timings = []
    with (
        database(backend, DEFAULT_POSTGRES, "bench_first") as url,
        Engine(url, sagas=[TwoInTransactions]) as engine,
    ):
        for _ in range(max(50, sagas // 2)):  # warm: caches, prepared statements
            engine.start(TwoInTransactions, Nothing())
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(sagas):
                engine.start(TwoInTransactions, Nothing())
            timings.append((time.perf_counter() - started) / sagas * 1e6)
    return {"source": source, "us_per_saga": statistics.median(timings), "repeats": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="source trees to compare")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--sagas", type=int, default=500, help="per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per process")
    parser.add_argument("--processes", type=int, default=3, help="processes per tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.backend, args.sagas, args.repeats)))
        return 0
    if not args.sources:
        parser.error("name at least one source tree")
    from bench_common import trees_in_turn

    options = ["--backend", args.backend, "--sagas", str(args.sagas)]
    options += ["--repeats", str(args.repeats)]
    figures = trees_in_turn(__file__, args.sources, args.processes, options, "us_per_saga")
    for source, values in figures.items():
        print(f"{source}: median {statistics.median(values):.0f} µs per saga ({args.backend})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
