"""The checkout demo behind ``statesaga demo``: five scenarios on a SQLite file."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from definitions.checkout.saga import CartLine, CompleteCart, CompleteCartInput
from statesaga import EntityBusy, Run
from statesaga.engine import Engine

__all__ = ["run_demo"]

LINES = (CartLine("mug", 2, 1250), CartLine("tea", 1, 899))


def _cart(engine: Engine, cart_id: str, method: str = "card", lines: Any = LINES) -> Run:
    return engine.start(
        CompleteCart,
        CompleteCartInput(cart_id, lines, payment_method=method),
        key=f"cart:complete:{cart_id}",
        correlation_id=f"req-{cart_id}",
    )


def _path(run: Run) -> str:
    """The states a run went through, from its history."""
    states: list[str] = []
    for entry in run.history:
        for state in (entry.from_state, entry.to_state):
            if not states or states[-1] != state:
                states.append(state)
    return " → ".join(states)


def run_demo(database: str, console: Console) -> list[tuple[str, Run]]:
    """Run every scenario against ``database``, print what each did, and return the runs.

    Each returned run carries its history as it stood right after its scenario.
    """
    suffix = uuid.uuid4().hex[:6]
    results: list[tuple[str, Run]] = []
    with Engine(database, sagas=[CompleteCart]) as engine:

        def record(scenario: str, run: Run) -> None:
            results.append((scenario, engine.get(run.id)))

        record("successful checkout", _cart(engine, f"ok-{suffix}"))
        record("payment declined", _cart(engine, f"declined-{suffix}", "declined-card"))
        record("empty cart", _cart(engine, f"empty-{suffix}", lines=()))
        waiting = _cart(engine, f"3ds-{suffix}", "3ds-card")
        record("3-D Secure: waits for the webhook", waiting)
        paid = engine.send("payment_succeeded", {"payment_id": "pay-demo"}, instance_id=waiting.id)
        record("3-D Secure: the webhook arrives", paid)
        record("two completes of one cart: the winner", _race(engine, f"race-{suffix}"))
        _print(engine, results, console)
    _write_diagrams(console)
    return results


def _write_diagrams(console: Console) -> None:
    """Write the checkout's diagram beside the database: Mermaid always, SVG with Graphviz."""
    from statesaga.diagram import DiagramError, draw, from_definition

    drawing = from_definition(CompleteCart)
    Path("checkout.mmd").write_bytes(draw(drawing, "mermaid"))
    written = ["checkout.mmd"]
    try:
        Path("checkout.svg").write_bytes(draw(drawing, "svg"))
        written.append("checkout.svg")
    except DiagramError as error:  # no Graphviz `dot` on this machine: Mermaid it is
        console.print(f"(no SVG: {error})", highlight=False, markup=False)
    console.print(f"The checkout diagram: {', '.join(written)}")


def _race(engine: Engine, cart_id: str) -> Run:
    """Two requests complete one cart at once: one runs, the other is told it is busy."""
    barrier = threading.Barrier(2)
    outcomes: list[Run | EntityBusy] = []

    def complete() -> None:
        barrier.wait()
        try:
            outcomes.append(_cart(engine, cart_id, "3ds-card"))
        except EntityBusy as busy:
            outcomes.append(busy)

    threads = [threading.Thread(target=complete) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = [o for o in outcomes if isinstance(o, Run)]
    busy = [o for o in outcomes if isinstance(o, EntityBusy)]
    assert len(runs) == 1, outcomes
    assert len(busy) == 1, outcomes
    return engine.send("payment_succeeded", {"payment_id": "pay-race"}, instance_id=runs[0].id)


def _print(engine: Engine, results: list[tuple[str, Run]], console: Console) -> None:
    table = Table(title="checkout scenarios")
    for column in ("scenario", "status", "path", "outcome"):
        table.add_column(column)
    for scenario, run in results:
        if run.output is not None:
            outcome = (
                f"order {run.output.order_id}, {run.output.total / 100:.2f} {run.output.currency}"
            )
        elif run.error is not None:
            outcome = f"{run.error.type.rsplit('.', 1)[-1]}: {run.error.message}"
        else:
            outcome = f"waiting in {run.state}"
        table.add_row(scenario, run.status.value, _path(run), outcome)
    console.print(table)
    console.print(
        "The second of two concurrent completes got EntityBusy: "
        "at most one open run per cart, enforced by the store."
    )
    console.print(
        f"Inspect a run: statesaga show {results[0][1].id} --db {engine.store.engine.url}"
    )
