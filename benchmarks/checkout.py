"""The real checkout end to end: completes per second and latency, beside a floor.

``Shop.complete`` (definitions/checkout) runs the complete-cart saga with the
simulated payment provider on ``card_ok`` carts: validate, reserve, authorize,
record the payment, order, complete the cart. Closed loop: ``N`` threads in
flight, each completing carts of its own (two products of its own, so that
threads do not queue on one inventory row), one after another.

The floor makes the same shop reads and writes and the same provider call
without the engine: the cart read ``Shop.complete`` starts with, then the
saga's own step functions (``validate_cart``, ``reserve_inventory``,
``authorize_payment``, ``record_payment``, ``create_order``,
``complete_cart``) called in order, each database step in a transaction of
its own through the same SQLAlchemy engine (``SqlStore.transaction``, as the
engine gives a transactional step). What separates the two is the engine:
its instance row and history, its lease, its interpreter. The engine's share
of a checkout is ``1 - floor ÷ engine`` of the time per checkout, measured
side by side in one run: each repeat runs both (which goes first alternates),
and the share is the median over the repeats' pairs (``--repeats``).

``--http`` serves ``definitions.checkout.http`` (``python -m
definitions.checkout.http --db URL --port P``, the app's own entry point,
with its worker thread) in ``--servers`` processes on free ports of
127.0.0.1, and an httpx client completes carts there, round robin; only
those processes are stopped afterwards, by pid.

Levels: 1, 4, 16 and 64 in flight. On PostgreSQL the process holds at most
``pool_size + max_overflow + hot_connections`` connections (10 by default),
however many threads are in flight: beyond that, threads wait for a
connection, served in the order they came. Over HTTP each server process
runs ``--threads`` (8) requests at once and holds at most 10.

Usage::

    python benchmarks/checkout.py                        # SQLite and PostgreSQL, in process
    python benchmarks/checkout.py --http                 # and over HTTP
    python benchmarks/checkout.py --profile              # where a checkout's time goes
    python benchmarks/checkout.py --backends sqlite --inflight 1,4,16,64 --json checkout.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from bench_common import (
    DEFAULT_POSTGRES,
    ROOT,
    console,
    database,
    environment,
    median,
    percentile,
    table,
    write_json,
)

from definitions.checkout.models import Cart, CartLine, InventoryItem
from definitions.checkout.provider import PaymentProvider, SimulatedProvider
from definitions.checkout.saga import (
    CheckoutData,
    CompleteCartInput,
    authorize_payment,
    complete_cart,
    create_order,
    payment_requires_action,
    record_payment,
    reserve_inventory,
    validate_cart,
)
from definitions.checkout.shop import Shop
from statesaga import StepContext
from statesaga.context import Resources
from statesaga.store import SqlStore

LEVELS = {"sqlite": [1, 4, 16, 64], "postgres": [1, 4, 16, 64]}
PRICE_A, PRICE_B = 1250, 899


# -- carts --------------------------------------------------------------------------------------


def stock_and_carts(
    database: sa.Engine, tag: str, threads: int, per_thread: int
) -> list[list[str]]:
    """Two products per thread and ``per_thread`` open ``card_ok`` carts of them; the cart ids."""
    carts: list[list[str]] = []
    items, cart_rows, lines = [], [], []
    for thread in range(threads):
        a, b = f"{tag}-{thread}-a", f"{tag}-{thread}-b"
        for sku, price in ((a, PRICE_A), (b, PRICE_B)):
            items.append(
                {"sku": sku, "name": sku, "unit_price": price, "currency": "EUR",
                 "stocked": 10**9, "reserved": 0, "version": 1}
            )  # fmt: skip
        ids = [f"cart-{uuid.uuid4().hex[:16]}" for _ in range(per_thread)]
        carts.append(ids)
        for cart_id in ids:
            cart_rows.append(
                {"id": cart_id, "currency": "EUR", "payment_method": "card_ok",
                 "status": "open", "version": 1}
            )  # fmt: skip
            for sku, quantity, price in ((a, 1, PRICE_A), (b, 2, PRICE_B)):
                lines.append(
                    {"cart_id": cart_id, "sku": sku, "quantity": quantity, "unit_price": price,
                     "currency": "EUR", "version": 1}
                )  # fmt: skip
    with database.begin() as connection:
        connection.execute(sa.insert(InventoryItem), items)
        connection.execute(sa.insert(Cart), cart_rows)
        connection.execute(sa.insert(CartLine), lines)
    return carts


# -- the two ways to check a cart out ----------------------------------------------------------


def engine_checkout(shop: Shop) -> Callable[[str], None]:
    """``Shop.complete``: the checkout as the shop runs it."""

    def complete(cart_id: str) -> None:
        result = shop.complete(cart_id)
        if result.status != "completed":
            raise AssertionError(f"checkout of {cart_id} ended {result.status}")

    return complete


def floor_checkout(shop: Shop, store: SqlStore, provider: PaymentProvider) -> Callable[[str], None]:
    """The same reads, writes and provider call, without the engine."""
    resources = Resources([provider])
    transactional = (validate_cart, reserve_inventory)
    after_payment = (record_payment, create_order, complete_cart)

    def context(
        saga_input: CompleteCartInput, data: CheckoutData, instance_id: str, connection: Any
    ) -> StepContext[CompleteCartInput, CheckoutData]:
        return StepContext(
            input=saga_input, data=data, instance_id=instance_id, saga="complete-cart",
            step="floor", attempt=1, idempotency_key=f"{instance_id}:floor",
            correlation_id=instance_id, connection=connection, resources=resources,
        )  # fmt: skip

    def complete(cart_id: str) -> None:
        shop.cart(cart_id)  # Shop.complete reads the cart first
        saga_input, data, instance_id = CompleteCartInput(cart_id), CheckoutData(), uuid.uuid4().hex
        for step in transactional:
            with store.transaction() as connection:
                data = step(context(saga_input, data, instance_id, connection)) or data
        data = authorize_payment(context(saga_input, data, instance_id, None))
        if payment_requires_action(context(saga_input, data, instance_id, None)):
            raise AssertionError("card_ok never requires action")
        for step in after_payment:
            with store.transaction() as connection:
                data = step(context(saga_input, data, instance_id, connection)) or data
        if data.order_id is None:
            raise AssertionError(f"floor checkout of {cart_id} made no order")

    return complete


# -- closed loop, in process -------------------------------------------------------------------


def closed_loop(complete: Callable[[str], None], carts: list[list[str]]) -> dict[str, Any]:
    """Every thread completes its carts one after another; throughput and latency."""
    latencies: list[list[float]] = [[] for _ in carts]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(carts) + 1)

    def work(index: int) -> None:
        gate.wait()
        for cart_id in carts[index]:
            started = time.perf_counter()
            try:
                complete(cart_id)
            except BaseException as error:  # reported after the loop
                errors.append(error)
                return
            latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(carts))]
    for thread in threads:
        thread.start()
    gate.wait()
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for thread in threads:
        thread.join()
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    if errors:
        first = errors[0]
        raise RuntimeError(f"{len(errors)} checkouts failed; the first: {first!r}") from first
    figures = _figures([s for per in latencies for s in per], elapsed)
    # what this process spent per checkout: CPU, and how often a thread gave up its core
    # to wait (a lock, a connection, the database); many more of these per checkout at
    # high concurrency is threads handing the interpreter lock to each other
    count = figures["checkouts"]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    figures["cpu_ms"] = cpu / count * 1000
    figures["switches"] = (after.ru_nvcsw - before.ru_nvcsw) / count
    return figures


def _figures(latencies: list[float], elapsed: float) -> dict[str, Any]:
    return {
        "checkouts": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p90_ms": percentile(latencies, 0.9) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": sum(latencies) / len(latencies) * 1000,
    }


def say(what: str, level: int, figures: dict[str, Any]) -> None:
    """One line of progress."""
    process = (
        f"  CPU {figures['cpu_ms']:5.2f} ms, {figures['switches']:5.0f} switches per checkout"
        if "cpu_ms" in figures
        else ""
    )
    console.print(
        f"  {what:16} {level:3} in flight: {figures['per_second']:7.1f}/s  "
        f"p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:7.1f} ms{process}"
    )


def store_for(url: str, pool: tuple[int, int, int] | None) -> str | SqlStore:
    """The URL, or a store on it with ``pool`` as (pool_size, max_overflow, hot_connections)."""
    if pool is None:
        return url
    size, overflow, hot = pool
    return SqlStore(url, pool_size=size, max_overflow=overflow, hot_connections=hot)


def pool_environment(pool: tuple[int, int, int] | None) -> dict[str, str]:
    """The settings an API process reads for ``pool`` (nothing without one)."""
    if pool is None:
        return {}
    size, overflow, hot = pool
    return {
        "STATESAGA_POOL_SIZE": str(size),
        "STATESAGA_MAX_OVERFLOW": str(overflow),
        "STATESAGA_HOT_CONNECTIONS": str(hot),
    }


def in_process(kind: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    provider = SimulatedProvider()
    results = []
    with Shop.open(store_for(url, args.pool), provider=provider) as shop:
        store: SqlStore = shop.engine.store  # type: ignore[assignment]
        variants = {
            "engine": engine_checkout(shop),
            "floor": floor_checkout(shop, store, provider),
        }
        for level in args.levels[kind]:
            per_thread = max(args.min_per_thread, args.checkouts // level)
            for repeat in range(args.repeats):
                # alternate which goes first, so that a drift in the machine's load
                # does not always favour the same one
                order = list(variants.items())
                for name, complete in order if repeat % 2 == 0 else order[::-1]:
                    carts = stock_and_carts(
                        shop.database, f"{name[0]}{uuid.uuid4().hex[:8]}", level, per_thread
                    )
                    figures = closed_loop(complete, carts)
                    results.append(
                        {
                            "backend": kind,
                            "mode": "in process",
                            "variant": name,
                            "in_flight": level,
                            **figures,
                        }
                    )
                    say(f"{kind} {name}", level, figures)
            provider.calls.clear()  # the simulated provider records every call
    return results


# -- over HTTP ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_servers(
    url: str,
    count: int,
    log: Any,
    threads: int | None = None,
    pool: tuple[int, int, int] | None = None,
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """``count`` checkout API processes on free ports of 127.0.0.1, answering."""
    import httpx

    env = {**os.environ, **pool_environment(pool)}
    processes, ports = [], []
    for _ in range(count):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "definitions.checkout.http",
            "--db",
            url,
            "--port",
            str(port),
            *(["--threads", str(threads)] if threads is not None else []),
        ]
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, env=env))
        ports.append(port)
    deadline = time.monotonic() + 60
    for process, port in zip(processes, ports, strict=True):
        while True:
            if process.poll() is not None:
                stop_servers(processes)
                raise RuntimeError(
                    f"the checkout server on port {port} exited ({process.returncode})"
                )
            try:
                httpx.get(f"http://127.0.0.1:{port}/problems/cart-not-found", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    stop_servers(processes)
                    raise RuntimeError(
                        f"the checkout server on port {port} did not answer"
                    ) from None
                time.sleep(0.2)
    return processes, ports


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop the servers this benchmark started (and only those), by their pid."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def http_loop(ports: list[int], carts: list[list[str]]) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=len(carts), max_keepalive_connections=len(carts))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def work(index: int) -> None:
            base = f"http://127.0.0.1:{ports[index % len(ports)]}"
            for cart_id in carts[index]:
                started = time.perf_counter()
                response = await client.post(f"{base}/carts/{cart_id}/complete")
                if response.status_code != 200:
                    answer = f"HTTP {response.status_code} {response.text[:300]}"
                    raise RuntimeError(f"{cart_id}: {answer}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(work(i) for i in range(len(carts))))
        elapsed = time.perf_counter() - started
    return _figures(latencies, elapsed)


def over_http(kind: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    # the shop here makes the tables and adds the carts; the servers check them out
    with Shop.open(url, provider=SimulatedProvider()) as shop, open(args.server_log, "ab") as log:
        processes, ports = start_servers(url, args.servers, log, args.server_threads, args.pool)
        try:
            for level in args.levels[kind]:
                per_thread = max(args.min_per_thread, args.checkouts // level)
                for _ in range(args.repeats):
                    carts = stock_and_carts(
                        shop.database, f"h{uuid.uuid4().hex[:8]}", level, per_thread
                    )
                    figures = asyncio.run(http_loop(ports, carts))
                    results.append(
                        {
                            "backend": kind,
                            "mode": f"HTTP, {args.servers} servers"
                            + (f" x {args.server_threads} threads" if args.server_threads else ""),
                            "variant": "engine",
                            "in_flight": level,
                            **figures,
                        }
                    )
                    say(f"{kind} HTTP", level, figures)
        finally:
            stop_servers(processes)
    return results


# -- where the time goes -----------------------------------------------------------------------

AREAS = (
    ("statesaga/", "engine (statesaga)"),
    ("definitions/", "shop steps and Shop"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg", "psycopg (waiting on PostgreSQL included)"),
    ("sqlite3", "sqlite3 (the database's own work)"),
    ("cattrs", "cattrs"),
    ("attr", "attrs"),
    ("json", "json"),
    ("threading", "threads, locks"),
    ("_thread", "threads, locks"),
)


def area_of(filename: str, function: str) -> str:
    """Which area a profiled function belongs to (a C function by its name)."""
    where = function if filename == "~" else filename
    return next((label for key, label in AREAS if key in where), "other (builtins, C calls)")


def profile(kind: str, url: str, count: int) -> dict[str, Any]:
    """cProfile of ``count`` sequential engine checkouts, and of the floor: own time by area."""
    provider = SimulatedProvider()
    figures: dict[str, Any] = {}
    with Shop.open(url, provider=provider) as shop:
        store: SqlStore = shop.engine.store  # type: ignore[assignment]
        for name, complete in (
            ("engine", engine_checkout(shop)),
            ("floor", floor_checkout(shop, store, provider)),
        ):
            carts = stock_and_carts(shop.database, f"p{name[0]}{uuid.uuid4().hex[:6]}", 1, count)[0]
            complete(carts.pop())  # warm
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            for cart_id in carts:
                complete(cart_id)
            profiler.disable()
            elapsed = time.perf_counter() - started
            stats = pstats.Stats(profiler)
            areas: dict[str, float] = defaultdict(float)
            total = 0.0
            for (filename, _, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
                total += own
                areas[area_of(filename, function)] += own
            per = {label: seconds / len(carts) * 1e6 for label, seconds in areas.items()}
            figures[name] = {"us_per_checkout": elapsed / len(carts) * 1e6, "areas_us": per}
            each = elapsed / len(carts) * 1e3
            table(
                f"{kind}, {name}: own time per checkout under cProfile ({each:.2f} ms each)",
                ["area", "µs per checkout", "share"],
                [
                    (label, per[label], f"{areas[label] / total:.0%}")
                    for label in sorted(areas, key=lambda label: -areas[label])
                ],
            )
            if name == "engine":
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                console.print(out.getvalue(), markup=False, highlight=False)
                figures["engine_top"] = out.getvalue()
    return figures


# -- the report --------------------------------------------------------------------------------


def report(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (backend, mode, variant, level), and the engine's share beside its floor."""
    Groups = dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]]
    groups: Groups = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[(r["backend"], r["mode"], r["in_flight"])][r["variant"]].append(r)
    rows, summary = [], []
    for (backend, mode, level), variants in groups.items():
        engine = variants.get("engine", [])
        floor = variants.get("floor", [])
        line: dict[str, Any] = {
            "backend": backend, "mode": mode, "in_flight": level,
            "engine_per_second": median([r["per_second"] for r in engine]),
            "engine_p50_ms": median([r["p50_ms"] for r in engine]),
            "engine_p90_ms": median([r["p90_ms"] for r in engine]),
            "engine_p99_ms": median([r["p99_ms"] for r in engine]),
            "floor_per_second": median([r["per_second"] for r in floor]),
            "floor_p50_ms": median([r["p50_ms"] for r in floor]),
            "engine_cpu_ms": median([r["cpu_ms"] for r in engine if "cpu_ms" in r]),
            "floor_cpu_ms": median([r["cpu_ms"] for r in floor if "cpu_ms" in r]),
            "engine_switches": median([r["switches"] for r in engine if "switches" in r]),
            "floor_switches": median([r["switches"] for r in floor if "switches" in r]),
        }  # fmt: skip
        # the share of a checkout's time that is the engine's: 1 - (floor's time ÷ engine's),
        # from the repeats' side-by-side pairs (the machine's load drifts between repeats)
        pairs = [e["per_second"] / f["per_second"] for e, f in zip(engine, floor, strict=False)]
        line["engine_share"] = 1 - median(pairs)
        summary.append(line)
        rows.append(
            (backend, mode, level, line["engine_per_second"], line["engine_p50_ms"],
             line["engine_p90_ms"], line["engine_p99_ms"], line["floor_per_second"],
             line["floor_p50_ms"],
             1 - line["engine_share"],
             f"{line['engine_share']:.0%}" if line["engine_share"] == line["engine_share"] else "-")
        )  # fmt: skip
    table(
        "checkout: completes per second and latency (ms)",
        ["backend", "mode", "in flight", "engine /s", "p50", "p90", "p99", "floor /s",
         "floor p50", "engine ÷ floor", "engine's share"],
        rows,
    )  # fmt: skip
    in_process = [line for line in summary if line["mode"] == "in process"]
    if in_process:
        table(
            "checkout, in process: this process's CPU and voluntary context switches per checkout",
            ["backend", "in flight", "engine CPU ms", "floor CPU ms", "engine switches",
             "floor switches"],
            [(line["backend"], line["in_flight"], line["engine_cpu_ms"], line["floor_cpu_ms"],
              line["engine_switches"], line["floor_switches"]) for line in in_process],
        )  # fmt: skip
    return summary


def parse_pool(parser: argparse.ArgumentParser, text: str | None) -> tuple[int, int, int] | None:
    """``--pool SIZE,OVERFLOW,HOT`` as three numbers, or an error that shows the form."""
    if text is None:
        return None
    try:
        size, overflow, hot = (int(part) for part in text.split(","))
    except ValueError:
        parser.error(f"--pool {text!r}: give SIZE,OVERFLOW,HOT, e.g. --pool 4,0,4")
    if size < 1 or overflow < 0 or hot < 1:
        parser.error(f"--pool {text!r}: SIZE and HOT at least 1, OVERFLOW at least 0")
    return size, overflow, hot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--inflight",
        help="levels, comma-separated (default: 1,4,16,64)",
    )
    parser.add_argument(
        "--checkouts", type=int, default=300, help="checkouts per level and variant"
    )
    parser.add_argument(
        "--min-per-thread", type=int, default=8, help="at least this many per thread"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each level, interleaved")
    parser.add_argument("--http", action="store_true", help="also complete carts over HTTP")
    parser.add_argument("--http-only", action="store_true", help="only over HTTP")
    parser.add_argument("--servers", type=int, default=3, help="checkout API processes for --http")
    parser.add_argument(
        "--server-threads",
        type=int,
        help="requests each API process runs at once (its --threads; default: the app's, 8)",
    )
    parser.add_argument(
        "--pool",
        help="SIZE,OVERFLOW,HOT: the store's pool_size, max_overflow and hot_connections, "
        "in process and in the API processes (default: the store's, 5,0,5)",
    )
    parser.add_argument("--server-log", default="/tmp/statesaga-bench-checkout-servers.log")
    parser.add_argument("--profile", action="store_true", help="print where a checkout's time goes")
    parser.add_argument("--profile-checkouts", type=int, default=300)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    args.pool = parse_pool(parser, args.pool)
    args.levels = {
        b: [int(x) for x in args.inflight.split(",")] if args.inflight else LEVELS[b]
        for b in backends
    }
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for kind in backends:
        with database(kind, args.postgres, "bench_checkout") as url:
            if args.profile:
                profiles[kind] = profile(kind, url, args.profile_checkouts)
            if not args.http_only:
                results += in_process(kind, url, args)
            if args.http or args.http_only:
                results += over_http(kind, url, args)
    summary = report(results) if results else []
    figures = {
        "environment": environment(["httpx", "uvicorn", "starlette"]),
        "arguments": vars(args),
        "summary": summary,
        "results": results,
        "profiles": profiles,
    }
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
