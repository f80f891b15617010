"""What ``load_faults.py`` checks: the bad inputs of scenario 5 and, once the workers
settled, the promises (nothing dropped, nothing open, the shop's invariants)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa
from load_client import Client
from load_deploy import Deployment

from definitions.checkout.signing import SIGNATURE_HEADER, sign

OPEN = ("running", "waiting", "compensating")
TABLES = (
    "statesaga_instances",
    "statesaga_history",
    "statesaga_inbox",
    "shop_orders",
    "shop_payments",
    "shop_reservations",
    "shop_carts",
)
# what a checkout may legitimately be compensated for in these scenarios
# (a retried complete may start a second checkout that finds the cart completed: the client
# gets the order; a timeout that fired late is compensated by the deadline instead)
EXPECTED = ("InsufficientStock", "PaymentDeclined", "CartAlreadyCompleted")
EXPECTED_TIMEOUTS = ("WaitTimedOut", "DeadlinePassed")
CONNECTION_WORDS = ("OperationalError", "InterfaceError", "StoreError", "connection", "terminat")
LEAKS = ("Traceback", "psycopg", "sqlalchemy", "SELECT ", "INSERT ", "UPDATE ")


def row_counts(db: sa.Engine) -> dict[str, int]:
    with db.connect() as connection:
        return {
            t: int(connection.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one())
            for t in TABLES
        }


def open_runs(db: sa.Engine) -> int:
    with db.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM statesaga_instances WHERE status = ANY(:open)"),
                {"open": list(OPEN)},
            ).scalar_one()
        )


def settle(db: sa.Engine, limit: float) -> float:
    """Wait until no run is open (or ``limit`` seconds); the seconds waited."""
    started = time.monotonic()
    while open_runs(db) and time.monotonic() - started < limit:
        time.sleep(1.0)
    return round(time.monotonic() - started, 1)


# -- scenario 5 --------------------------------------------------------------------------------


def _webhook_bodies() -> list[tuple[str, bytes]]:
    good = {"provider_ref": "pi_0123456789abcdef", "reference": "cart-x", "status": "succeeded"}
    cases: list[tuple[str, bytes]] = []
    nul = "a\x00b"
    for field in ("provider_ref", "reference", "status", "id"):
        cases.append((f"NUL in {field}", json.dumps({**good, "id": "e1", field: nul}).encode()))
        for label, value in (("null", None), ("number", 1), ("float", 1.5), ("bool", True),
                             ("object", {"a": 1}), ("list", ["a"])):  # fmt: skip
            cases.append((f"{label} as {field}", json.dumps({**good, field: value}).encode()))
        cases.append((f"absurd {field}", json.dumps({**good, field: "x" * 20_000}).encode()))
    digits = "9" * 5000
    huge = f'{{"provider_ref": {digits}, "reference": "c", "status": "succeeded"}}'.encode()
    deep_field = json.dumps({**good, "reference": None}).encode()
    deep_field = deep_field.replace(b"null", b"[" * 20_000 + b"]" * 20_000)
    cases += [
        ("huge integer field", huge),
        ("huge integer body", digits.encode()),
        ("1e999999 field", b'{"provider_ref": 1e999999, "reference": "c", "status": "succeeded"}'),
        ("NaN field", b'{"provider_ref": NaN, "reference": "c", "status": "succeeded"}'),
        ("deep list", b"[" * 30_000 + b"]" * 30_000),
        ("deep object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
        ("deep in a field", deep_field),
        ("not JSON", b"not json"),
        ("empty body", b""),
        ("invalid UTF-8", b'{"provider_ref": "\xff\xfe", "reference": "c", "status": "succeeded"}'),
        ("truncated JSON", b'{"provider_ref": "pi_1"'),
        ("a list", b"[]"),
        ("a string", b'"succeeded"'),
        ("null", b"null"),
        ("missing fields", b"{}"),
        ("unknown status", json.dumps({**good, "status": "refunded"}).encode()),
        ("extra field", json.dumps({**good, "amount": 10**30}).encode()),
        ("unknown payment", json.dumps(good).encode()),
        ("over 64 KiB", json.dumps({**good, "pad": "x" * 70_000}).encode()),
    ]  # fmt: skip
    return cases


def bad_inputs(client: Client, target_ref: str, target_cart: str) -> list[dict[str, Any]]:
    """Send every bad input once; what each got."""
    deployment = client.deployment
    secret = deployment.secret
    results: list[dict[str, Any]] = []

    def record(name: str, method: str, url: str, **options: Any) -> None:
        response = client.call("5 bad inputs", name, method, url, **options)
        status = None if response is None else response.status_code
        body = "" if response is None else response.text
        results.append(
            {
                "case": name,
                "status": status,
                "ok": status is not None and 400 <= status < 500,
                "leak": [word for word in LEAKS if word in body],
            }
        )

    api = client.api(0)
    for label, raw in (
        ("NUL", "abc%00def"), ("only NUL", "%00"), ("control chars", "a%01b%7F"),
        ("5,000 chars", "x" * 5000), ("60,000 chars", "y" * 60_000), ("unicode", "ünï©ødé-😀"),
        ("invalid UTF-8", "%ff%fe"), ("dots", "%2e%2e"), ("quote", "'%20OR%201=1%20--"),
        ("slash", "a%2Fb"), ("huge number", "9" * 400), ("space", "%20"),
    ):  # fmt: skip
        record(f"cart id: {label}", "POST", f"{api}/carts/{raw}/complete")
        record(f"checkout id: {label}", "GET", f"{api}/checkouts/{raw}")
    url = f"{api}/payments/webhook"
    for label, body in _webhook_bodies():
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
        record(f"webhook: {label}", "POST", url, content=body, headers=headers)
    # forged, unsigned, stale: a real pending payment's confirmation, not from the provider
    forged = json.dumps(
        {
            "provider_ref": target_ref,
            "reference": target_cart,
            "status": "succeeded",
            "id": "evt_forged",
        }
    ).encode()
    now = int(time.time())
    for label, header in (
        ("unsigned", None),
        ("wrong secret", sign(forged, "whsec_guessed")),
        ("stale (1 h old)", sign(forged, secret, timestamp=now - 3600)),
        ("from the future (1 h)", sign(forged, secret, timestamp=now + 3600)),
        ("malformed header", "garbage"),
        ("non-numeric timestamp", "t=abc,v1=00"),
        ("2,000-char header", "t=1," + "v1=" + "0" * 2000),
        ("signature of another body", sign(forged.replace(b"succeeded", b"failed"), secret)),
        # the secret leaked: well signed, but the provider still holds the payment as
        # requires_action, so the shop must refuse it (409) after asking the provider
        ("well signed, provider disagrees", sign(forged, secret)),
    ):
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers[SIGNATURE_HEADER] = header
        record(f"forged webhook: {label}", "POST", url, content=forged, headers=headers)
    return results


# -- the checks after the workers settled --------------------------------------------------------


def _json(value: Any) -> Any:
    """A JSON column's value: text on SQLite, already decoded from JSONB on PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _runs(db: sa.Engine) -> list[dict[str, Any]]:
    with db.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT id, entity_key, status, state, context, error, due_at, lease_expires_at "
                "FROM statesaga_instances"
            )
        ).mappings()
        runs = []
        for row in rows:
            context = _json(row["context"]) or {}
            runs.append({**row, "context": context, "error": _json(row["error"])})
        return runs


def _history(db: sa.Engine, instance_id: str) -> list[str]:
    """A run's history, one line per row: seconds since its start, what, which epoch."""
    with db.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT kind, transition, from_state, to_state, attempt, epoch, error, "
                "started_at, finished_at FROM statesaga_history "
                "WHERE instance_id = :id ORDER BY version"
            ),
            {"id": instance_id},
        ).mappings()
        lines, began = [], None
        for row in rows:
            began = row["started_at"] if began is None else began
            error = (_json(row["error"]) or {}).get("type", "").rsplit(".", 1)[-1]
            lines.append(
                f"+{row['started_at'] - began:.2f}..{row['finished_at'] - began:.2f}s "
                f"{row['kind']} {row['transition'] or ''} {row['from_state']}->{row['to_state']} "
                f"attempt {row['attempt']} epoch {row['epoch']} {error}".rstrip()
            )
        return lines


def _scenario(deployment: Deployment, entity_key: str | None) -> str:
    cart = (entity_key or "").removeprefix("cart:complete:")
    if not cart.startswith(deployment.cart_prefix):
        return "seed"
    return cart.removeprefix(deployment.cart_prefix).split("-")[0]


def invariants(db: sa.Engine) -> dict[str, Any]:
    with db.connect() as connection:
        doubled = connection.exec_driver_sql(
            "SELECT count(*) FROM (SELECT cart_id FROM shop_orders WHERE canceled_at IS NULL "
            "GROUP BY cart_id HAVING count(*) > 1) AS d"
        ).scalar_one()
        stock = connection.exec_driver_sql(
            "SELECT i.sku, i.stocked, i.reserved, coalesce(sum(r.quantity) FILTER "
            "(WHERE r.status = 'held'), 0) FROM shop_inventory i LEFT JOIN shop_reservations r "
            "ON r.sku = i.sku GROUP BY i.sku, i.stocked, i.reserved ORDER BY i.sku"
        ).all()
        orphan_orders = connection.exec_driver_sql(
            "SELECT count(*) FROM shop_orders o JOIN shop_carts c ON c.id = o.cart_id "
            "WHERE o.canceled_at IS NULL AND (c.status <> 'completed' OR c.order_id <> o.id)"
        ).scalar_one()
    levels = [
        {"sku": sku, "stocked": stocked, "reserved": reserved, "held": int(held)}
        for sku, stocked, reserved, held in stock
    ]
    return {
        "carts_with_two_live_orders": int(doubled),
        "stock": levels,
        "stock_consistent": all(s["reserved"] == s["held"] <= s["stocked"] for s in levels),
        "live_orders_of_carts_not_completed": int(orphan_orders),
    }


def final_checks(client: Client, confirmed: dict[str, str]) -> dict[str, Any]:
    """The figures of the issue; ``confirmed``: provider_ref -> cart of every confirmation sent."""
    deployment = client.deployment
    runs = _runs(deployment.db)
    payments = client.http.get(f"{deployment.provider_url}/payments", timeout=60).json()
    by_ref = {r["context"].get("provider_ref"): r for r in runs if r["context"].get("provider_ref")}
    outcomes: dict[str, Counter[str]] = {}
    for run in runs:
        label = run["status"]
        if run["error"]:
            label += f" ({run['error'].get('type', '?').rsplit('.', 1)[-1]})"
        outcomes.setdefault(_scenario(deployment, run["entity_key"]), Counter())[label] += 1
    dropped = []
    for ref, cart in confirmed.items():
        paid = by_ref.get(ref)
        if paid is None or paid["status"] != "completed":
            dropped.append({"provider_ref": ref, "cart": cart, "status": paid and paid["status"]})
    held_for_compensated = []
    for payment in payments:
        if payment["status"] not in ("authorized", "requires_action"):
            continue
        holder = by_ref.get(payment["provider_ref"])
        if holder is None or holder["status"] != "completed":
            held_for_compensated.append(
                {
                    **payment,
                    "run": holder and holder["id"],
                    "run_status": holder and holder["status"],
                }
            )
    unexpected = []
    for run in runs:
        if run["status"] != "compensated":
            continue
        kind = (run["error"] or {}).get("type", "?").rsplit(".", 1)[-1]
        scenario = _scenario(deployment, run["entity_key"])
        if kind in EXPECTED or (kind in EXPECTED_TIMEOUTS and scenario == "s2"):
            continue
        text = json.dumps(run["error"])
        unexpected.append(
            {
                "run": run["id"],
                "scenario": scenario,
                "error": kind,
                "message": ((run["error"] or {}).get("message") or "")[:300],
                "connection": any(word in text for word in CONNECTION_WORDS),
                "history": _history(deployment.db, run["id"]),
            }
        )
    now = time.time()
    stranded = [
        r["id"]
        for r in runs
        if r["status"] in OPEN
        and r["due_at"] is None
        and (r["lease_expires_at"] is None or r["lease_expires_at"] < now)
    ]
    return {
        "runs": len(runs),
        "outcomes": {k: dict(v) for k, v in sorted(outcomes.items())},
        "confirmations_sent": len(confirmed),
        "dropped_confirmations": dropped,
        "runs_left_open": sum(r["status"] in OPEN for r in runs),
        "runs_failed": sum(r["status"] == "failed" for r in runs),
        "open_without_lease_or_due_time": stranded,
        "unexpected_compensations": unexpected,
        "compensated_because_of_a_connection": sum(u["connection"] for u in unexpected),
        "held_at_provider": held_for_compensated,
        "invariants": invariants(deployment.db),
    }
