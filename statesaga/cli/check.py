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
from statesaga.cli._common import JsonOption, consoles, load_sagas, print_json
from statesaga.definition import Definition, StateDef, StepDef, TransitionDef
from statesaga.retry import Retry

__all__ = ["check", "retry_text", "seconds_text"]


def seconds_text(seconds: float | None) -> str:
    """A duration as a person writes it: ``500ms``, ``30s``, ``15m``, ``2h``, ``1d``."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def retry_text(retry: Retry) -> str:
    """A retry policy in a few words."""
    if retry.attempts == 1:
        return "1 try"
    return (
        f"{retry.attempts} tries, {seconds_text(retry.initial_interval)} x{retry.backoff:g} "
        f"up to {seconds_text(retry.max_interval)}"
    )


def _trigger(t: TransitionDef, definition: Definition) -> str:
    if t.event:
        return f"event {t.event}" + (f" when {t.guard_name}" if t.guard else "")
    if t.on_timeout:
        return f"timeout after {_wait_text(definition.states[t.source])}"
    if t.guard:
        return f"when {t.guard_name}"
    return "auto"


def _wait_text(state: StateDef) -> str:
    """A state's timeout: fixed, or the function computing each run's."""
    if state.timeout_of is not None:
        return f"{state.timeout_name}(ctx)"
    return seconds_text(state.timeout)


def _rollback_text(step: StepDef) -> str:
    """A step's compensation, or a pivot's void (marked as one)."""
    if step.void is not None:
        return f"void {step.void_name}"
    return step.compensation_name or ""


def _marks(step: StepDef) -> list[str]:
    return [
        mark
        for mark, on in (
            ("pivot", step.pivot),
            ("read-only", step.read_only),
            ("transactional", step.transactional),
            ("undo on failure", step.compensate_on_failure),
        )
        if on
    ]


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
                "trigger": _trigger(t, definition),
                "step": None if t.step is None else _step_json(t.step),
            }
            for t in definition.transitions.values()
        ],
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
    for t in definition.transitions.values():
        step = t.step
        table.add_row(
            t.name,
            t.source,
            t.target,
            escape(_trigger(t, definition)),
            step.function_name if step else "",
            retry_text(step.retry) if step else "",
            seconds_text(step.timeout) if step else "",
            _rollback_text(step) if step else "",
            retry_text(step.compensation_retry) if step and step.rollback else "",
            ", ".join(_marks(step)) if step else "",
        )
    return table


@app.command()
def check(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of a saga, or MODULE.")],
    as_json: JsonOption = False,
) -> None:
    """Import and validate saga definitions; print their transitions, retries and timeouts."""
    definitions = load_sagas(reference)
    if as_json:
        print_json([describe(d) for d in definitions])
        return
    for d in definitions:
        consoles.out.print(_table(d))
        waits = [f"{name} ({_wait_text(state)})" for name, state in d.states.items() if state.timed]
        notes = [f"{len(d.states)} states, {len(d.transitions)} transitions"]
        if waits:
            notes.append("waiting states time out: " + ", ".join(waits))
        if d.deadline is not None:
            notes.append(f"run deadline {seconds_text(d.deadline)}")
        elif d.deadline_of is not None:
            notes.append("run deadline deadline(input)")
        consoles.out.print(f"[green]ok[/]: {escape('; '.join(notes))}", highlight=False)
