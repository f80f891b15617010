"""The interpreter's cost per transition decision, beside a ``transitions`` trigger.

A 6-state linear saga (5 steps, context data that never changes) is driven
through ``Interpreter.next(snapshot, StepSucceeded(data), now)`` for each of its
5 steps, many times over; an equivalent 6-state ``transitions.Machine`` on a
plain model is driven through its 5 triggers in the same run. Each repeat
times a whole loop with ``time.perf_counter_ns`` (garbage collection off, as
``timeit`` does); the figure reported is the median of the repeats, in
nanoseconds per decision (or per trigger). Benchmarks are interleaved repeat
by repeat so that a noisy neighbour slows all of them alike.

Usage::

    python benchmarks/interpreter.py                 # a table
    python benchmarks/interpreter.py --json out.json # and the numbers as JSON
    python benchmarks/interpreter.py --profile       # and where the interpreter's time goes

The target is at most 10 µs per decision (``TARGET_NS``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from transitions import Machine

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statesaga import Saga, State
from statesaga.core import Finish, Interpreter, Snapshot, Status, StepSucceeded

TARGET_NS = 10_000
STATES = [f"s{i}" for i in range(6)]
STEPS = 5


@attrs.frozen
class Payload:
    """Input and context data of the benchmark saga: nothing to carry."""


def noop(ctx: Any) -> None:
    """A step (and compensation) that does nothing and keeps the data."""


def linear_saga(*, compensatable: bool) -> type[Saga[Payload, Payload]]:
    """s0 -> s1 -> ... -> s5, one step per transition.

    ``compensatable`` steps have an ``undo`` (each success pushes onto the
    compensation stack, as in a real saga); otherwise they are ``read_only``.
    """

    def step(transition: Any) -> Any:
        if compensatable:
            return transition.run(noop, undo=noop)
        return transition.run(noop, read_only=True)

    class Linear(Saga[Payload, Payload]):
        name = "linear"
        s0 = State(initial=True)
        s1 = State()
        s2 = State()
        s3 = State()
        s4 = State()
        s5 = State(final=True)
        t1 = step(s0.to(s1))
        t2 = step(s1.to(s2))
        t3 = step(s2.to(s3))
        t4 = step(s3.to(s4))
        t5 = step(s4.to(s5))

    return Linear


def interpreter_loop(saga: type[Saga[Payload, Payload]]) -> tuple[Callable[[int], None], int]:
    """A loop running ``runs`` times the saga's 5 decisions; and the decisions per run.

    The interpreter is pure, so the snapshot each step is reported on is
    computed once and reused: the loop times ``next`` and nothing else (plus
    building the ``StepSucceeded`` outcome, which any driver must do).
    """
    interpreter = Interpreter(saga.definition, rand=lambda: 0.5)
    data = Payload()
    now = 1.0
    answer = interpreter.start("bench-1", Payload(), data, now=0.0)
    snapshots: list[Snapshot] = []
    while answer.snapshot.pending is not None:
        snapshots.append(answer.snapshot)
        answer = interpreter.next(answer.snapshot, StepSucceeded(data), now)
    # check the loop measures what it claims: 5 steps, ending in a completed run
    assert len(snapshots) == STEPS, snapshots
    assert answer.decision == Finish(Status.COMPLETED), answer.decision

    next_ = interpreter.next

    def loop(runs: int) -> None:
        for _ in range(runs):
            for snapshot in snapshots:
                next_(snapshot, StepSucceeded(data), now)

    return loop, STEPS


class Model:
    """A plain model for ``transitions`` (no callbacks)."""

    state: str


def transitions_loop() -> tuple[Callable[[int], None], int]:
    """A loop running ``runs`` times the 5 triggers of an equivalent 6-state Machine."""
    model = Model()
    Machine(
        model=model,
        states=STATES,
        transitions=[
            {"trigger": f"t{i}", "source": STATES[i - 1], "dest": STATES[i]}
            for i in range(1, STEPS + 1)
        ],
        initial=STATES[0],
        auto_transitions=False,
    )
    triggers = [getattr(model, f"t{i}") for i in range(1, STEPS + 1)]
    for trigger in triggers:
        trigger()
    assert model.state == STATES[-1], model.state
    first = STATES[0]

    def loop(runs: int) -> None:
        for _ in range(runs):
            model.state = first  # back to the start: one attribute write per 5 triggers
            for trigger in triggers:
                trigger()

    return loop, STEPS


def time_once(loop: Callable[[int], None], runs: int, per_run: int) -> float:
    """Nanoseconds per operation for one timed loop."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        loop(runs)
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / (runs * per_run)


BENCHMARKS: dict[str, tuple[str, Callable[[], tuple[Callable[[int], None], int]]]] = {
    "interpreter": (
        "Interpreter.next, steps with undo",
        lambda: interpreter_loop(linear_saga(compensatable=True)),
    ),
    "interpreter_read_only": (
        "Interpreter.next, read-only steps",
        lambda: interpreter_loop(linear_saga(compensatable=False)),
    ),
    "transitions": (
        f"transitions {version('transitions')} trigger",
        transitions_loop,
    ),
}


def run(runs: int, repeats: int) -> dict[str, list[float]]:
    """Per-repeat ns/op for every benchmark, interleaved repeat by repeat."""
    loops = {name: make() for name, (_, make) in BENCHMARKS.items()}
    for loop, per_run in loops.values():  # warm up caches and attrs' generated code
        time_once(loop, max(1, runs // 10), per_run)
    results: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, (loop, per_run) in loops.items():
            results[name].append(time_once(loop, runs, per_run))
    return results


def summary(results: dict[str, list[float]], runs: int, repeats: int) -> dict[str, Any]:
    """The figures as a JSON-ready document."""
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "benchmark": "interpreter",
        "unit": "ns per decision (interpreter) or per trigger (transitions)",
        "target_ns": TARGET_NS,
        "within_target": medians["interpreter"] <= TARGET_NS,
        "ratio_interpreter_to_transitions": round(
            medians["interpreter"] / medians["transitions"], 3
        ),
        "runs": runs,
        "decisions_per_run": STEPS,
        "repeats": repeats,
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "statesaga": version("statesaga") if _installed("statesaga") else "checkout",
            "transitions": version("transitions"),
            "attrs": version("attrs"),
        },
        "results": {
            name: {
                "description": BENCHMARKS[name][0],
                "median_ns": round(medians[name], 1),
                "min_ns": round(min(values), 1),
                "max_ns": round(max(values), 1),
                "repeats_ns": [round(value, 1) for value in values],
            }
            for name, values in results.items()
        },
    }


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except Exception:
        return False
    return True


def show(document: dict[str, Any], console: Console) -> None:
    """Print the figures as a table."""
    table = Table(
        title=f"per decision, {document['repeats']} repeats "
        f"x {document['runs']} runs x {document['decisions_per_run']} decisions"
    )
    table.add_column("benchmark")
    table.add_column("median", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    for result in document["results"].values():
        table.add_row(
            result["description"],
            _us(result["median_ns"]),
            _us(result["min_ns"]),
            _us(result["max_ns"]),
        )
    console.print(table)
    interpreter = document["results"]["interpreter"]["median_ns"]
    verdict = "[green]met[/]" if document["within_target"] else "[red]missed[/]"
    console.print(
        f"target <= {_us(TARGET_NS)} per decision: {verdict} "
        f"({_us(interpreter)}, {document['ratio_interpreter_to_transitions']:.2f}x transitions)"
    )
    env = document["environment"]
    console.print(
        f"[dim]{env['implementation']} {env['python']} on {env['platform']}, {env['cpus']} CPUs[/]"
    )


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f} µs"


def profile(runs: int, console: Console, limit: int = 15) -> None:
    """Where the interpreter's time goes (cProfile, sorted by own time)."""
    loop, _ = interpreter_loop(linear_saga(compensatable=True))
    profiler = cProfile.Profile()
    profiler.enable()
    loop(runs)
    profiler.disable()
    console.print(f"\n[bold]cProfile of {runs} runs x {STEPS} decisions, by own time[/]")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="saga runs per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per benchmark")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--profile", action="store_true", help="also profile the interpreter")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeats < 1:
        parser.error("--runs and --repeats must be at least 1")

    console = Console()
    document = summary(run(args.runs, args.repeats), args.runs, args.repeats)
    show(document, console)
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {args.json}")
    if args.profile:
        profile(max(1, args.runs // 2), console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
