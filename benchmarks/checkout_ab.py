"""A/B of the checkout's engine share: source trees side by side, interleaved.

Each source tree (a checkout of statesaga at some revision, e.g. ``git archive
REV | tar -x -C /tmp/rev``) runs in processes of its own, the trees taking
turns; each process runs ``Shop.complete`` and the floor of ``checkout.py`` in
alternating rounds on a fresh store, and reports the median of its rounds'
``engine ÷ floor``. The machine's load drifts between processes; the ratio
within one process, engine beside floor, is what is compared.

Usage::

    git archive main | tar -x -C /tmp/main
    python benchmarks/checkout_ab.py /tmp/main .                   # SQLite, 1 in flight
    python benchmarks/checkout_ab.py /tmp/main . --backend postgres --inflight 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any


def child(source: str, backend: str, checkouts: int, rounds: int, level: int) -> dict[str, Any]:
    """One process's figures for the tree at ``source`` (imported from there)."""
    sys.path[:0] = [source, f"{source}/benchmarks"]
    import checkout as bench
    from bench_common import DEFAULT_POSTGRES, database

    import statesaga
    from definitions.checkout.provider import SimulatedProvider
    from definitions.checkout.shop import Shop

    if not statesaga.__file__ or not statesaga.__file__.startswith(str(Path(source).resolve())):
        raise SystemExit(f"statesaga was imported from {statesaga.__file__}, not {source}")
    figures: dict[str, list[float]] = {"engine": [], "floor": []}
    with database(backend, DEFAULT_POSTGRES, "bench_ab") as url:
        provider = SimulatedProvider()
        with Shop.open(url, provider=provider) as shop:
            variants = [
                ("engine", bench.engine_checkout(shop)),
                ("floor", bench.floor_checkout(shop, shop.engine.store, provider)),
            ]
            for name, complete in variants:  # warm
                for cart_id in bench.stock_and_carts(shop.database, f"w{name}", 1, 5)[0]:
                    complete(cart_id)
            for repeat in range(rounds):
                for name, complete in variants if repeat % 2 == 0 else variants[::-1]:
                    tag = f"{name[0]}{uuid.uuid4().hex[:8]}"
                    carts = bench.stock_and_carts(shop.database, tag, level, checkouts // level)
                    figures[name].append(bench.closed_loop(complete, carts)["per_second"])
                provider.calls.clear()
    ratios = [e / f for e, f in zip(figures["engine"], figures["floor"], strict=True)]
    return {"source": source, "ratio": statistics.median(ratios), "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="source trees to compare")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--checkouts", type=int, default=60, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per process")
    parser.add_argument("--processes", type=int, default=3, help="processes per tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, args.backend, args.checkouts, args.rounds, args.inflight)
        print(json.dumps(result))
        return 0
    if not args.sources:
        parser.error("name at least one source tree")
    from bench_common import trees_in_turn

    options = [
        "--backend", args.backend, "--inflight", str(args.inflight),
        "--checkouts", str(args.checkouts), "--rounds", str(args.rounds),
    ]  # fmt: skip
    ratios = trees_in_turn(__file__, args.sources, args.processes, options, "ratio")
    for source, values in ratios.items():
        ratio = statistics.median(values)
        print(f"{source}: median {ratio:.3f}, the engine's share {1 - ratio:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
