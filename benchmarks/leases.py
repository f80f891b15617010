"""Lease renewal at scale: N runs in flight on one ``AsyncEngine``, no lease seen expired.

``--runs`` runs are started on one ``AsyncEngine`` on PostgreSQL (a schema of
the run's own), each with an entity key, and each parks inside its first
step on an ``asyncio.Event``. Once all are inside, they stay there for
``--hold`` seconds (default: twice the lease ttl); then they are cancelled
and the schema dropped. A start the engine refuses (``EngineOverloaded``,
``--max-in-flight``) is tried again half a second later, as a client would.

All the while a monitor thread, on a connection of its own, asks the database
every 0.25 s how many of this engine's runs hold a lease that has expired
(``lease_owner`` is the engine and ``lease_expires_at`` is past). Every run is
parked inside a step, so any such lease is a lapse: a worker could take the
run over and run its step again. The figure to watch is the largest number
seen at once, and how many polls saw any (the goal: 0).

Each renewal statement (the store's ``extend_leases``) and each batch of lock
renewals is timed, with its size; the keeper's own figures (rounds, longest
round, the most seconds between two renewals of a lease) are reported beside
them, and so are the process's full garbage collections (``gc.callbacks``):
with many runs in flight they stall the whole process for seconds.

The renewal load is N / (ttl / 3) leases per second: 20,000 runs at a 6 s ttl
is the rate of 100,000 at the default 30 s, in a fifth of the time to start.

Usage::

    python benchmarks/leases.py                                # 20,000 runs, ttl 6 s
    python benchmarks/leases.py --runs 100000 --ttl 30         # the goal, at the default ttl
    python benchmarks/leases.py --runs 20000 --ttl 6 --locks redis
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from bench_common import DEFAULT_POSTGRES, console, environment, median, percentile, table
from bench_common import postgres_schema as schema
from bench_common import write_json as save
from memory import Gate, Order, ParkedSaga

from statesaga import EngineOverloaded
from statesaga.aio import AsyncEngine
from statesaga.runtime.leases import DEFAULT_MAX_IN_FLIGHT
from statesaga.store import SqlStore

DEFAULT_REDIS = os.environ.get("STATESAGA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: seconds between the monitor's looks at the leases
POLL = 0.25
#: starts in flight at once (under the 100 connections of an asyncio Redis pool)
WAVE = 50

_EXPIRED = sa.text(
    "SELECT count(*) FROM statesaga_instances "
    "WHERE lease_owner = :owner AND lease_expires_at < :now"
)


class Monitor(threading.Thread):
    """Counts this engine's expired leases every ``POLL`` seconds, on a connection of its own."""

    def __init__(self, url: str, owner: str, keeper: Any) -> None:
        super().__init__(name="lease-monitor", daemon=True)
        self.url, self.owner, self.keeper = url, owner, keeper
        self.stopping = threading.Event()
        self.phase = "starting"
        self.polls: dict[str, int] = {}
        self.lapsed_polls: dict[str, int] = {}
        self.most_lapsed: dict[str, int] = {}
        self.most_held = 0
        self.most_between: dict[str, float] = {}
        self.slowest_poll = 0.0

    def run(self) -> None:
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                while not self.stopping.wait(POLL):
                    began = time.perf_counter()
                    params = {"owner": self.owner, "now": time.time()}
                    expired = connection.execute(_EXPIRED, params).scalar_one()
                    connection.rollback()
                    self.slowest_poll = max(self.slowest_poll, time.perf_counter() - began)
                    phase, stats = self.phase, self.keeper.stats()
                    self.most_held = max(self.most_held, stats.held)
                    self.most_between[phase] = max(
                        self.most_between.get(phase, 0.0), stats.last_round_oldest
                    )
                    self.polls[phase] = self.polls.get(phase, 0) + 1
                    if expired:
                        self.lapsed_polls[phase] = self.lapsed_polls.get(phase, 0) + 1
                    self.most_lapsed[phase] = max(self.most_lapsed.get(phase, 0), expired)
        finally:
            engine.dispose()


class Timed:
    """Each call of a renewal method: when it began, how many it renewed, how long it took."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, float]] = []

    def wrap(self, method: Callable[..., Any], size: Callable[..., int]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()

            def done() -> None:
                self.calls.append((began, size(*args), time.perf_counter() - began))

            result = method(*args, **kwargs)
            if not inspect.isawaitable(result):
                done()
                return result

            async def awaited() -> Any:  # an async lock's batch: timed until it is answered
                try:
                    return await result
                finally:
                    done()

            return awaited()

        return timed

    def summary(self) -> dict[str, Any]:
        seconds = [s for _, _, s in self.calls]
        return {
            "calls": len(self.calls),
            "renewed": sum(n for _, n, _ in self.calls),
            "largest": max((n for _, n, _ in self.calls), default=0),
            "median_seconds": median(seconds),
            "p99_seconds": percentile(seconds, 0.99),
            "max_seconds": max(seconds, default=float("nan")),
        }


@asynccontextmanager
async def lock_service(kind: str, redis_url: str, store: SqlStore) -> AsyncIterator[Any]:
    """The engine's entity locks: none, Redis (a namespace of the run's own) or SQL."""
    if kind == "none":
        yield None
    elif kind == "sql":
        from statesaga.locks import SqlLocks

        yield SqlLocks(store)
    else:
        from statesaga.locks.redis import AsyncRedisLocks

        namespace = f"bench-leases:{os.getpid()}:"
        locks = AsyncRedisLocks(redis_url, namespace=namespace)
        try:
            yield locks
        finally:
            import redis

            client = redis.Redis.from_url(redis_url)
            for name in client.scan_iter(match=namespace + "*", count=1000):
                client.delete(name)
            client.close()
            await locks.aclose()


async def in_flight(
    url: str,
    runs: int,
    ttl: float,
    hold: float | None,
    locks_kind: str,
    redis_url: str,
    bound: int | None,
    park_timeout: float,
) -> dict[str, Any]:
    # tiny pools: the server's 100 connections are shared
    store = SqlStore(url, pool_size=2, max_overflow=1, hot_connections=2)
    async with lock_service(locks_kind, redis_url, store) as locks:
        gate = Gate()
        engine = AsyncEngine(
            store, sagas=[ParkedSaga], resources=[gate], lease_ttl=ttl, locks=locks,
            max_in_flight=bound,
        )  # fmt: skip
        statements, lock_batches = Timed(), Timed()
        store.extend_leases = statements.wrap(store.extend_leases, lambda leases, _: len(leases))  # type: ignore[method-assign]
        if locks is not None and hasattr(locks, "renew_many"):
            locks.renew_many = lock_batches.wrap(locks.renew_many, lambda leases, *_: len(leases))
        elif locks is not None:
            locks.renew = lock_batches.wrap(locks.renew, lambda *_: 1)
        monitor = Monitor(url, engine.owner, engine.runtime.keeper)
        monitor.start()
        try:
            started = time.perf_counter()
            refused = [0]

            async def start(n: int) -> Any:
                while True:  # as a client would: a refused start is tried again a little later
                    try:
                        return await engine.start(ParkedSaga, Order(n), key=f"order:{n}")
                    except EngineOverloaded:
                        refused[0] += 1
                        await asyncio.sleep(0.5)

            tasks: list[asyncio.Task[Any]] = []
            failed: list[BaseException] = []

            def note(task: asyncio.Task[Any]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    failed.append(task.exception())  # type: ignore[arg-type]

            give_up = started + park_timeout
            # in waves, as a client with bounded concurrency: a wave parks before the next
            while gate.inside < runs and time.perf_counter() < give_up:
                if len(tasks) < runs and gate.inside >= len(tasks):
                    for n in range(len(tasks), min(runs, len(tasks) + WAVE)):
                        tasks.append(asyncio.create_task(start(n)))
                        tasks[-1].add_done_callback(note)
                await asyncio.sleep(0.01)
                if failed:
                    raise RuntimeError(f"a start failed: {failed[0]!r}")
            parked, parked_after = gate.inside, time.perf_counter() - started
            console.print(
                f"  {parked:,} parked in {parked_after:.1f} s ({refused[0]:,} starts refused, "
                "tried again); holding"
            )
            monitor.phase = "holding"
            await asyncio.sleep(2 * ttl if hold is None else hold)
            monitor.phase = "done"
            monitor.stopping.set()
            monitor.join()
            refused_total = refused[0]
            # the parked runs are not finished: their schema is dropped with them
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            monitor.stopping.set()
            gate.event.set()
            engine.close()
        keeper = engine.runtime.keeper.stats()
    return {
        "runs": runs,
        "ttl": ttl,
        "locks": locks_kind,
        "max_in_flight": bound,
        "parked": parked,
        "starts_refused": refused_total,
        "seconds_to_park": parked_after,
        "hold_seconds": 2 * ttl if hold is None else hold,
        "renewal_rate_per_s": runs / (ttl / 3),
        "polls": monitor.polls,
        "polls_with_a_lapse": monitor.lapsed_polls,
        "most_lapsed_at_once": monitor.most_lapsed,
        "most_held": monitor.most_held,
        "slowest_poll_seconds": monitor.slowest_poll,
        "statements": statements.summary(),
        "lock_batches": lock_batches.summary(),
        "keeper": {
            "rounds": keeper.rounds,
            "renewed": keeper.renewed,
            "lost": keeper.lost,
            "longest_round_seconds": keeper.longest_round_seconds,
            "most_seconds_between_renewals": monitor.most_between,
        },
    }


class GcPauses:
    """How long full (generation 2) collections stall the process (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.full: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.full.append(time.perf_counter() - self._began)

    def summary(self) -> dict[str, Any]:
        return {
            "full_collections": len(self.full),
            "over_half_a_second": sum(1 for pause in self.full if pause > 0.5),
            "longest_seconds": max(self.full, default=0.0),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL (%(default)s)")
    parser.add_argument("--runs", type=int, default=20_000, help="runs in flight (%(default)s)")
    parser.add_argument("--ttl", type=float, default=6.0, help="lease ttl, s (%(default)s)")
    parser.add_argument("--hold", type=float, help="seconds parked once all are in (2 x ttl)")
    parser.add_argument("--locks", choices=("none", "redis", "sql"), default="none")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (%(default)s)")
    parser.add_argument(
        "--max-in-flight",
        default=str(DEFAULT_MAX_IN_FLIGHT),
        help="the engine's bound, or 'none' for no bound at all (%(default)s)",
    )
    parser.add_argument(
        "--park-timeout", type=float, default=1800.0, help="hold what parked by then (%(default)s)"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    bound = None if args.max_in_flight == "none" else int(args.max_in_flight)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    with schema(args.postgres, "bench_leases") as url:
        figures = asyncio.run(
            in_flight(
                url,
                args.runs,
                args.ttl,
                args.hold,
                args.locks,
                args.redis,
                bound,
                args.park_timeout,
            )
        )
    gc.callbacks.remove(pauses)
    figures["gc"] = pauses.summary()
    s, b, k = figures["statements"], figures["lock_batches"], figures["keeper"]
    table(
        f"{args.runs:,} runs in flight, ttl {args.ttl:g} s, locks: {args.locks} "
        f"({figures['renewal_rate_per_s']:,.0f} renewals/s)",
        ["phase", "polls", "polls that saw a lapse", "most expired at once",
         "most s between renewals"],
        [(phase, figures["polls"].get(phase, 0), figures["polls_with_a_lapse"].get(phase, 0),
          figures["most_lapsed_at_once"].get(phase, 0),
          figures["keeper"]["most_seconds_between_renewals"].get(phase, 0.0))
         for phase in ("starting", "holding")],
    )  # fmt: skip
    table(
        "renewals",
        ["what", "calls", "leases", "largest", "median s", "p99 s", "max s"],
        [("row leases (extend_leases)", s["calls"], s["renewed"], s["largest"],
          s["median_seconds"], s["p99_seconds"], s["max_seconds"]),
         ("entity locks", b["calls"], b["renewed"], b["largest"], b["median_seconds"],
          b["p99_seconds"], b["max_seconds"])],
    )  # fmt: skip
    console.print(
        f"  {figures['parked']:,} parked, {figures['starts_refused']:,} starts refused "
        f"(max_in_flight={bound}); keeper: {k['rounds']:,} rounds, {k['renewed']:,} renewed, "
        f"{k['lost']} lost, "
        f"longest round {k['longest_round_seconds']:.2f} s; parked in "
        f"{figures['seconds_to_park']:.1f} s; slowest poll {figures['slowest_poll_seconds']:.3f} s"
    )
    g = figures["gc"]
    console.print(
        f"  full garbage collections: {g['full_collections']}, {g['over_half_a_second']} of "
        f"them over 0.5 s, the longest {g['longest_seconds']:.2f} s (the whole process stalls)"
    )
    save(args.json, {"environment": environment(["redis"]), "leases": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
