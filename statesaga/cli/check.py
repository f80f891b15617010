"""``statesaga check``: import and validate sagas, and show what each transition does.

Each step is shown with its retry policy, its timeout and its markers
(pivot, read-only, transactional, undo on failure); waiting states with the
time they wait.

>>> from datetime import timedelta
>>> from statesaga import Retry
>>> retry_text(Retry(attempts=3, initial_interval=0.5, backoff=2, max_interval=60))
'3 tries, 500ms x2 up to 1m'
>>> seconds_text(timedelta(minutes=15).total_seconds())
'15m'
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from statesaga.cli._app import app
from statesaga.cli._common import JsonOption, consoles, load_sagas, opened, print_json
from statesaga.cli.migrations import print_unregistered, unregistered_runs
from statesaga.definition import Definition, StepDef
from statesaga.errors import StateSagaError
from statesaga.inspection import (
    retry_text,
    seconds_text,
    transition_rows,
    trigger_text,
    wait_text,
)
from statesaga.retry import Retry

__all__ = ["check", "retry_text", "seconds_text"]


def _retry_json(retry: Retry) -> dict[str, Any]:
    return {
        "attempts": retry.attempts,
        "initial_interval": retry.initial_interval,
        "backoff": retry.backoff,
        "max_interval": retry.max_interval,
    }


def _step_json(step: StepDef) -> dict[str, Any]:
    return {
        "function": step.function_name,
        "compensation": step.compensation_name,
        "void": step.void_name,
        "pivot": step.pivot,
        "read_only": step.read_only,
        "transactional": step.transactional,
        "undo_on_failure": step.compensate_on_failure,
        "timeout": step.timeout,
        "retry": _retry_json(step.retry),
        "compensation_retry": None
        if step.rollback is None
        else _retry_json(step.compensation_retry),
    }


def describe(definition: Definition) -> dict[str, Any]:
    """A definition as JSON: states (with their timeouts), transitions and steps."""
    return {
        "name": definition.name,
        "version": definition.version,
        "graph_hash": definition.graph_hash,
        "deadline": definition.deadline,
        "states": list(definition.states),
        "state_timeouts": {
            name: state.timeout
            for name, state in definition.states.items()
            if state.timeout is not None
        },
        "state_timeout_functions": {
            name: state.timeout_name
            for name, state in definition.states.items()
            if state.timeout_name is not None
        },
        "transitions": [
            {
                "name": t.name,
                "source": t.source,
                "target": t.target,
                "trigger": trigger_text(t, definition),
                "step": None if t.step is None else _step_json(t.step),
            }
            for t in definition.transitions.values()
        ],
        "migrations": {
            str(version): {"states": dict(plan.states), "context": plan.context_name}
            for version, plan in sorted(definition.migrations.items())
        },
    }


def _table(definition: Definition) -> Table:
    table = Table(title=f"{definition.name} v{definition.version}  (graph {definition.graph_hash})")
    for column in (
        "transition",
        "from",
        "to",
        "trigger",
        "step",
        "retry",
        "timeout",
        "compensation",
        "compensation retry",
        "marks",
    ):
        table.add_column(column)
    for row in transition_rows(definition):
        table.add_row(
            row.name,
            row.source,
            row.target,
            escape(row.trigger),
            row.step,
            row.retry,
            row.timeout,
            row.compensation,
            row.compensation_retry,
            ", ".join(row.marks),
        )
    return table


@app.command()
def check(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of a saga, or MODULE.")],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Also look in this store for open runs of a version these sagas do not "
            "register (and fail if there are some).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import and validate saga definitions; print their transitions, retries and timeouts."""
    definitions = load_sagas(reference)
    stranded: list[tuple[str, int, int]] = []
    if db is not None:
        with opened(db, read_only=True) as engine:
            stranded = unregistered_runs(engine.store, definitions)
    if as_json:
        print_json([describe(d) for d in definitions])
    else:
        _print_checked(definitions)
    if stranded:
        if not as_json:
            print_unregistered(stranded)
        versions = ", ".join(f"{saga} v{version}" for saga, version, _ in stranded)
        raise StateSagaError(
            f"open runs of {versions} would have no registered version; migrate them or "
            "keep those versions registered"
        )


def _print_checked(definitions: list[Definition]) -> None:
    for d in definitions:
        consoles.out.print(_table(d))
        waits = [f"{name} ({wait_text(state)})" for name, state in d.states.items() if state.timed]
        notes = [f"{len(d.states)} states, {len(d.transitions)} transitions"]
        if waits:
            notes.append("waiting states time out: " + ", ".join(waits))
        if d.deadline is not None:
            notes.append(f"run deadline {seconds_text(d.deadline)}")
        elif d.deadline_of is not None:
            notes.append("run deadline deadline(input)")
        for version, plan in sorted(d.migrations.items()):
            moved = [f"{old} \u2192 {new}" for old, new in plan.states.items() if old != new]
            notes.append(
                f"migrates runs of v{version}"
                + (f" ({', '.join(moved)})" if moved else " (states of the same names)")
            )
        consoles.out.print(f"[green]ok[/]: {escape('; '.join(notes))}", highlight=False)
