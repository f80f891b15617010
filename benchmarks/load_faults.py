"""Load and faults against the checkout deployed as in production (issue 12's script).

Deploys the checkout as docs/production.md says ("The checkout as several
processes"): PostgreSQL (a schema of its own, dropped at the end), Redis
entity locks, the provider service, 3 API processes and 2 ``statesaga
worker`` processes, all on 127.0.0.1 (see ``load_deploy.py``). Then:

1. webhook/client races: 3-D Secure checkouts completed through the API; at
   one moment the customer confirms twice (the provider signs and delivers
   each) while the storefront retries ``complete``; then the signed delivery
   is posted to every API process at once, with one more retry;
2. waiting-state timeouts colliding with a held lock: 3-D Secure checkouts
   left waiting; the script holds each cart's Redis entity lock from 1 s
   before its timeout is due until ``--hold`` seconds after, then releases it
   (the 45 s wait is the saga's own: no setting shortens it);
3. a mixed load during which every PostgreSQL backend of the deployment is
   terminated (twice), by ``application_name`` (a 3-D Secure cart whose
   ``complete`` answers 409 or 503 is followed, as a shop's page would, until
   its checkout waits for the customer);
4. the same load during which the deployment's Redis lock keys are deleted
   (three times), by prefix;
5. bad inputs: NUL bytes, absurd ids, deep nesting, huge numbers, wrong JSON
   types, forged, unsigned and stale webhooks.

Then it measures the connections each process holds under 64 concurrent
requests, waits for the workers to settle and prints the figures: dropped
confirmations, runs left open, 5xx answers (a 503 with ``Retry-After`` is
allowed), checkouts compensated because of a connection, and the invariants.

    .venv/bin/python benchmarks/load_faults.py --quick
    .venv/bin/python benchmarks/load_faults.py --json load_faults.json
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import sqlalchemy as sa
from bench_common import console, environment, table, write_json
from load_checks import bad_inputs, final_checks, row_counts, settle
from load_client import Client, make_carts, seed_products
from load_deploy import REDIS, Deployment

from statesaga.settings import Settings

# compare-and-delete: release only the lock this script took
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def _together(*calls: Callable[[], Any]) -> None:
    """Run ``calls`` in threads released at one instant (a barrier)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        call()

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Scenarios:
    def __init__(self, client: Client, args: argparse.Namespace) -> None:
        self.client = client
        self.deployment = client.deployment
        self.args = args
        self.confirmed: dict[str, str] = {}  # provider_ref -> cart: every confirmation sent
        self._lock = threading.Lock()
        self.figures: dict[str, Any] = {}

    def _carts(
        self, scenario: str, methods: list[str], scarce_every: int = 0
    ) -> list[tuple[str, str]]:
        prefix = f"{self.deployment.cart_prefix}{scenario}-"
        return make_carts(self.deployment.db, prefix, methods, scarce_every)

    def _confirm(self, scenario: str, ref: str, cart_id: str) -> dict[str, Any] | None:
        answer = self.client.action(scenario, ref)
        if answer is not None:
            with self._lock:
                self.confirmed[ref] = cart_id
        return answer

    # -- 1 ------------------------------------------------------------------------------------

    def races(self) -> None:
        scenario, client, args = "1 races", self.client, self.args
        carts = self._carts("s1", ["card_3ds"] * args.races)
        not_waiting: list[Any] = []

        def race(cart: tuple[str, str]) -> None:
            cart_id = cart[0]
            first = client.complete(scenario, cart_id)
            if first is None or first.status_code != 202:
                not_waiting.append(None if first is None else first.status_code)
                return
            ref = first.json()["provider_ref"]
            answers: list[dict[str, Any] | None] = []
            _together(
                *[lambda: answers.append(self._confirm(scenario, ref, cart_id))] * args.actions,
                *[lambda i=i: client.complete(scenario, cart_id, i) for i in range(args.retries)],
            )
            delivery = next((a for a in answers if a is not None), None)
            if delivery is None:
                return
            _together(
                *[
                    lambda i=i: client.deliver(scenario, delivery, i)
                    for i in range(args.duplicates)
                ],
                lambda: client.complete(scenario, cart_id),
            )
            client.ensure_delivered(scenario, delivery)

        started = time.monotonic()
        with ThreadPoolExecutor(args.race_concurrency) as pool:
            list(pool.map(race, carts))
        self.figures["1 races"] = {
            "races": args.races,
            "seconds": round(time.monotonic() - started, 1),
            "first_complete_not_202": len(not_waiting),
        }

    # -- 2 ------------------------------------------------------------------------------------

    def timeouts_begin(self) -> threading.Thread:
        """Leave checkouts waiting; a thread holds each cart's lock around its due time."""
        scenario, client, args = "2 timeouts", self.client, self.args
        carts = self._carts("s2", ["card_3ds"] * args.timeouts)
        ids: list[str] = []

        def start(cart: tuple[str, str]) -> None:
            response = client.complete(scenario, cart[0])
            if response is not None and response.status_code == 202:
                ids.append(response.json()["checkout_id"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(start, carts))
        with self.deployment.db.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT id, entity_key, due_at FROM statesaga_instances WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            ).all()
        figures: dict[str, Any] = {
            "waiting": len(ids),
            "without_due_time_at_start": sum(r.due_at is None for r in rows),
        }
        self.figures["2 timeouts"] = figures
        plan = sorted((float(r.due_at), r.id, r.entity_key) for r in rows if r.due_at is not None)
        thread = threading.Thread(target=self._hold_locks, args=(plan, figures), daemon=True)
        thread.start()
        return thread

    def _hold_locks(self, plan: list[tuple[float, str, str]], figures: dict[str, Any]) -> None:
        args, db = self.args, self.deployment.db
        locks = redis.Redis.from_url(REDIS)
        release = locks.register_script(_RELEASE)
        token = f"load-faults-{uuid.uuid4().hex}"
        held, refused, still_open, due_null = 0, 0, 0, 0
        events = sorted(
            [(due - args.lead, "take", key, run) for due, run, key in plan]
            + [(due + args.hold, "give", key, run) for due, run, key in plan]
        )
        for at, what, key, run in events:
            time.sleep(max(0.0, at - time.time()))
            name = self.deployment.lock_key(key.removeprefix("cart:complete:"))
            if what == "take":
                ttl = int((args.lead + args.hold + 10) * 1000)  # a safety net: released below
                if locks.set(name, token, nx=True, px=ttl):
                    held += 1
                else:
                    refused += 1
                continue
            with db.connect() as connection:
                row = connection.execute(
                    sa.text("SELECT status, due_at FROM statesaga_instances WHERE id = :id"),
                    {"id": run},
                ).one()
            if row.status in ("waiting", "running", "compensating"):
                still_open += 1  # the worker met the held lock (or had not come yet)
                due_null += row.due_at is None
            release(keys=[name], args=[token])
        locks.close()
        figures.update(
            locks_held=held,
            locks_already_taken=refused,
            open_when_released=still_open,
            open_without_due_time_when_released=due_null,
        )

    # -- 3 and 4 ------------------------------------------------------------------------------

    def mixed_load(
        self, scenario: str, tag: str, fault: Callable[[], Any], points: list[float]
    ) -> None:
        client, args = self.client, self.args
        methods = random.Random(7).choices(["card_ok", "card_3ds"], weights=[3, 1], k=args.load)
        carts = self._carts(tag, methods, scarce_every=10)
        done = [0]
        faults: list[Any] = []

        def unit(cart: tuple[str, str]) -> None:
            cart_id, method = cart
            if method == "card_ok":  # a double click: two completes at once
                _together(
                    lambda: client.complete(scenario, cart_id, 0),
                    lambda: client.complete(scenario, cart_id, 1),
                )
            else:
                first = client.complete(scenario, cart_id)
                if first is not None and first.status_code == 202:
                    ref: str | None = first.json()["provider_ref"]
                elif first is None or first.status_code in (409, 503):
                    ref = client.awaited_action(scenario, cart_id)  # its checkout is open
                else:
                    ref = None
                if ref is not None:
                    answer = self._confirm(scenario, ref, cart_id)
                    if answer is not None:
                        client.ensure_delivered(scenario, answer)
            with self._lock:
                done[0] += 1

        def injector() -> None:
            for point in points:
                while done[0] < point * len(carts):
                    time.sleep(0.05)
                faults.append(fault())

        started = time.monotonic()
        thread = threading.Thread(target=injector, daemon=True)
        thread.start()
        with ThreadPoolExecutor(args.load_concurrency) as pool:
            list(pool.map(unit, carts))
        thread.join(timeout=5)
        self.figures[scenario] = {
            "checkouts": len(carts),
            "seconds": round(time.monotonic() - started, 1),
            "faults": faults,
        }

    def terminate(self) -> int:
        return self.deployment.terminate_backends()

    def flush_locks(self) -> int:
        locks = redis.Redis.from_url(REDIS)
        try:
            keys = list(locks.scan_iter(match=self.deployment.lock_pattern(), count=500))
            return int(locks.delete(*keys)) if keys else 0
        finally:
            locks.close()

    # -- connections --------------------------------------------------------------------------

    def connections(self) -> None:
        """Each process's connections (pg_stat_activity) while 64 requests run at once."""
        client, args = self.client, self.args
        carts = self._carts("conn", ["card_ok"] * (64 * args.connection_rounds))
        peak: dict[str, int] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for name, count in self.deployment.connections().items():
                    peak[name] = max(peak.get(name, 0), count)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda c: client.complete("connections", c[0], hash(c[0])), carts))
        stop.set()
        sampler.join()
        threads = self.deployment.threads
        defaults = Settings()  # what the deployment's processes run with
        pooled = defaults.pool_size + defaults.max_overflow
        hot = defaults.hot_connections
        api_bound = min(threads, pooled) + min(threads, hot)
        worker_t = self.deployment.concurrency + 2
        worker_bound = min(worker_t, pooled) + min(worker_t, hot)
        tag = self.deployment.tag + "_"
        self.figures["connections"] = {
            "concurrent_requests": 64,
            "requests": len(carts),
            "peak_per_process": {k.removeprefix(tag): v for k, v in sorted(peak.items())},
            "bound_api": api_bound,
            "bound_worker": worker_bound,
            "within_bounds": all(
                v <= (api_bound if "_api" in k else worker_bound) for k, v in peak.items()
            ),
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--races", type=int, help="webhook/client races (1000; quick 30)")
    parser.add_argument("--timeouts", type=int, help="timeouts meeting a held lock (200; quick 10)")
    parser.add_argument("--load", type=int, help="checkouts per fault load (400; quick 40)")
    parser.add_argument("--actions", type=int, default=2, help="confirmations at once (2)")
    parser.add_argument("--retries", type=int, default=2, help="completes racing them (2)")
    parser.add_argument("--duplicates", type=int, default=3, help="deliveries at once (3)")
    parser.add_argument("--race-concurrency", type=int, default=8, help="races at once (8)")
    parser.add_argument("--load-concurrency", type=int, default=16, help="checkouts at once (16)")
    parser.add_argument("--connection-rounds", type=int, default=3, help="x 64 requests (3)")
    parser.add_argument(
        "--hold", type=float, default=5.0, help="seconds a lock is held past due (5)"
    )
    parser.add_argument("--lead", type=float, default=1.0, help="seconds taken before due (1)")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait for workers")
    parser.add_argument("--json", help="write the figures to this file")
    return parser


def main() -> int:
    args = _parser().parse_args()
    defaults = (30, 10, 40) if args.quick else (1000, 200, 400)
    args.races = args.races if args.races is not None else defaults[0]
    args.timeouts = args.timeouts if args.timeouts is not None else defaults[1]
    args.load = args.load if args.load is not None else defaults[2]
    deployment = Deployment()
    console.print(
        f"deploying {deployment.tag} (schema {deployment.schema}; logs {deployment.logs})"
    )
    figures: dict[str, Any] = {"environment": environment(["httpx", "psycopg", "redis"])}
    client = Client(deployment)
    try:
        started = time.monotonic()
        deployment.start()
        figures["deploy_seconds"] = round(time.monotonic() - started, 1)
        seed_products(deployment.db)
        scenarios = Scenarios(client, args)
        console.print(
            f"2: {args.timeouts} checkouts left waiting; locks held around their timeouts"
        )
        holder = scenarios.timeouts_begin()
        console.print(f"1: {args.races} webhook/client races")
        scenarios.races()
        holder.join()
        console.print(f"3: {args.load} checkouts, PostgreSQL backends terminated twice")
        scenarios.mixed_load("3 backends terminated", "s3", scenarios.terminate, [1 / 3, 2 / 3])
        console.print(f"4: {args.load} checkouts, the deployment's Redis locks deleted thrice")
        scenarios.mixed_load("4 redis flushed", "s4", scenarios.flush_locks, [0.25, 0.5, 0.75])
        console.print("connections under 64 concurrent requests")
        scenarios.connections()
        figures["settle_seconds_before_bad_inputs"] = settle(deployment.db, args.settle)
        console.print("5: bad inputs")
        [(target_cart, _)] = scenarios._carts("s5", ["card_3ds"])
        target = client.complete("5 bad inputs", target_cart)
        target_ref = target.json()["provider_ref"] if target is not None else "pi_unknown"
        before = row_counts(deployment.db)
        cases = bad_inputs(client, target_ref, target_cart)
        after = row_counts(deployment.db)
        figures["5 bad inputs"] = {
            "cases": len(cases),
            "not_4xx": [c for c in cases if not c["ok"]],
            "leaking_internals": [c for c in cases if c["leak"]],
            "rows_written": {t: after[t] - before[t] for t in before if after[t] != before[t]},
        }
        answer = scenarios._confirm("5 bad inputs", target_ref, target_cart)  # the real one
        if answer is not None:
            client.ensure_delivered("5 bad inputs", answer)
        figures["settle_seconds"] = settle(deployment.db, args.settle)
        figures.update(scenarios.figures)
        figures["checks"] = final_checks(client, scenarios.confirmed)
    finally:
        client_figures = {
            "answers": {k: dict(sorted(v.items())) for k, v in sorted(client.answers.items())},
            "responses_5xx": client.failures,
            "transport_errors": client.transport_errors[:50],
            "transport_error_count": len(client.transport_errors),
        }
        client.close()
        figures.update(client_figures)
        figures["logged_500s"] = deployment.log_lines(") failed")
        figures["exit_codes"] = deployment.stop()
    _print(figures)
    write_json(args.json, figures)
    return 0


def _print(figures: dict[str, Any]) -> None:
    rows = []
    for scenario, counts in figures["answers"].items():
        for answer, count in counts.items():
            rows.append((scenario, answer, count))
    table("answers", ("scenario", "answer", "count"), rows)
    checks = figures.get("checks", {})
    invariants = checks.get("invariants", {})
    summary = [
        ("dropped confirmations", len(checks.get("dropped_confirmations", []))),
        ("runs left open", checks.get("runs_left_open")),
        ("runs failed", checks.get("runs_failed")),
        ("open without lease or due time", len(checks.get("open_without_lease_or_due_time", []))),
        ("5xx (not 503 + Retry-After)", len(figures["responses_5xx"])),
        ("500s logged by the API", sum(figures["logged_500s"].values())),
        ("transport errors", figures["transport_error_count"]),
        ("unexpected compensations", len(checks.get("unexpected_compensations", []))),
        ("compensated because of a connection", checks.get("compensated_because_of_a_connection")),
        ("held at provider, no completed checkout", len(checks.get("held_at_provider", []))),
        ("carts with two live orders", invariants.get("carts_with_two_live_orders")),
        ("reserved == held <= stocked", invariants.get("stock_consistent")),
    ]  # fmt: skip
    table("promises", ("figure", "value"), summary)
    for key in (
        "1 races",
        "2 timeouts",
        "3 backends terminated",
        "4 redis flushed",
        "connections",
        "5 bad inputs",
    ):
        if key in figures:
            console.print(key, figures[key])
    console.print("outcomes", checks.get("outcomes"))
    for unexpected in checks.get("unexpected_compensations", []):
        console.print(
            f"unexpected compensation of {unexpected['run']} ({unexpected['scenario']}, "
            f"{unexpected['error']}: {unexpected['message']}); its history:"
        )
        for line in unexpected.get("history", []):
            console.print("   ", line, markup=False, highlight=False)


if __name__ == "__main__":
    raise SystemExit(main())
