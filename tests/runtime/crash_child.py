"""A child process for the crash tests: runs ``CrashCheckout`` and dies where told.

Usage (the tests run it with ``sys.executable``)::

    crash_child.py run DB LEDGER BOUNDARY [--fail] [--idempotent] [--lease-ttl S]
    crash_child.py abandon DB LEDGER COUNT [--lease-ttl S] [--step-delay S]
    crash_child.py recover DB [--at EPOCH] [--boundary BOUNDARY] [--lease-ttl S]

``run`` starts one checkout and kills the process with ``SIGKILL`` at
``BOUNDARY``, written ``<when>:<what>``:

- ``before:<step>`` / ``after:<step>``: as the step function (or, for
  ``<step>.undo``, its compensation) is entered / has returned, before
  anything about it is persisted;
- ``uncommitted:<record>``: the transition's UPDATE and history INSERT have
  run but its COMMIT has not (a transactional step's own writes included);
- ``committed:<record>``: right after the transition's COMMIT.

The saga's first step (``reserve``) is transactional, so the start is written
in its transaction: ``start`` and ``reserve`` commit together. With
``--idempotent`` the run is started with an idempotency key, and the start
commits on its own before the step runs.

A ``<record>`` names a history row: ``start``, a transition (its forward
row), ``<transition>.undo`` (its compensation) or ``<transition>.failed``.

``abandon`` starts ``COUNT`` checkouts and walks away from each one partway
(as if its process had died: nothing more persisted, its lease left to
expire), then kills itself. ``recover`` waits until ``EPOCH``, calls
``Engine.recover()`` once (dying at ``BOUNDARY`` if given) and prints the
runs it resumed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crash_saga import ABANDON_AT, CrashCheckout, Order, ensure_effects_table

import statesaga._pump
from statesaga import Engine
from statesaga.store.base import HistoryRow
from statesaga.store.hooks import StoreWrite, WriteMoment


def die() -> None:
    """Die as a crash does: no cleanup, no flush, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)


def record_name(row: HistoryRow) -> str:
    """How a boundary names a history row."""
    if row.kind == "start":
        return "start"
    if row.kind == "compensate":
        return f"{row.transition}.undo"
    if row.kind == "failure":
        return f"{row.transition}.failed"
    return str(row.transition)


def wrap_steps(before: Callable[[str], None], after: Callable[[str], None]) -> None:
    """Hook every step and compensation call (``ctx.step`` names it) of this process."""
    original = statesaga._pump.call

    def call(request: Any) -> Any:
        before(request.ctx.step)
        response = original(request)
        after(request.ctx.step)
        return response

    statesaga._pump.call = call


def arm(engine: Engine, boundary: str) -> None:
    """Make this process die at ``boundary``."""
    when, _, what = boundary.partition(":")
    if when in ("before", "after"):
        wrap_steps(
            lambda step: die() if when == "before" and step == what else None,
            lambda step: die() if when == "after" and step == what else None,
        )
        return
    if when not in ("uncommitted", "committed"):
        raise SystemExit(f"unknown boundary {boundary!r}")
    # the store's hook: die just before the named write commits, or right after it did
    moment = WriteMoment.BEFORE_COMMIT if when == "uncommitted" else WriteMoment.COMMITTED

    def die_at(at: WriteMoment, write: StoreWrite) -> None:
        if at is moment and any(record_name(row) == what for row in write.history):
            die()

    store: Any = engine.store
    store.hook = die_at


class Abandon(BaseException):
    """Walk away from a run: like a crash, it escapes every ``except Exception``."""


def run(args: argparse.Namespace) -> None:
    engine = Engine(f"sqlite:///{args.db}", sagas=[CrashCheckout], lease_ttl=args.lease_ttl)
    ensure_effects_table(engine.store.engine)  # type: ignore[attr-defined]
    arm(engine, args.boundary)
    order = Order(uuid.uuid4().hex[:8], args.db, args.ledger, fail_shipping=args.fail)
    # with an idempotency key the start commits on its own before the first step runs;
    # without, it commits with that (transactional) step
    key = f"order-{order.order_id}" if args.idempotent else None
    result = engine.start(CrashCheckout, order, idempotency_key=key)
    print(json.dumps({"id": result.id, "status": result.status.value}))


def abandon(args: argparse.Namespace) -> None:
    engine = Engine(f"sqlite:///{args.db}", sagas=[CrashCheckout], lease_ttl=args.lease_ttl)
    ensure_effects_table(engine.store.engine)  # type: ignore[attr-defined]
    boundary = ""

    def before(step: str) -> None:
        if boundary == f"before:{step}":
            raise Abandon

    def after(step: str) -> None:
        if boundary == f"after:{step}":
            raise Abandon

    wrap_steps(before, after)
    for number in range(args.count):
        order_id = f"order-{number}"
        boundary, fail = ABANDON_AT[number % len(ABANDON_AT)]
        order = Order(
            order_id, args.db, args.ledger, fail_shipping=fail, step_delay=args.step_delay
        )
        with contextlib.suppress(Abandon):
            # an idempotency key: the start commits before the first step, which some leave
            engine.start(CrashCheckout, order, key=order_id, idempotency_key=order_id)
    sys.stdout.flush()
    die()


def recover(args: argparse.Namespace) -> None:
    engine = Engine(f"sqlite:///{args.db}", sagas=[CrashCheckout], lease_ttl=args.lease_ttl)
    if args.boundary:
        arm(engine, args.boundary)
    time.sleep(max(0.0, args.at - time.time()))
    started = time.time()
    runs = engine.recover()
    finished = time.time()
    engine.close()
    print(
        json.dumps(
            {
                "resumed": [[r.id, r.status.value] for r in runs],
                "started": started,
                "finished": finished,
            }
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run")
    one.add_argument("db")
    one.add_argument("ledger")
    one.add_argument("boundary")
    one.add_argument("--fail", action="store_true")
    one.add_argument("--idempotent", action="store_true", help="start with an idempotency key")
    many = commands.add_parser("abandon")
    many.add_argument("db")
    many.add_argument("ledger")
    many.add_argument("count", type=int)
    many.add_argument("--step-delay", type=float, default=0.0)
    again = commands.add_parser("recover")
    again.add_argument("db")
    again.add_argument("--at", type=float, default=0.0)
    again.add_argument("--boundary", default="", help="die there while recovering")
    for command in (one, many, again):
        command.add_argument("--lease-ttl", type=float, default=0.5)
    args = parser.parse_args(argv)
    {"run": run, "abandon": abandon, "recover": recover}[args.command](args)


if __name__ == "__main__":
    main()
