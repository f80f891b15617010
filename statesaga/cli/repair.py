"""An operator's ways out of ``failed``: ``resolve`` a run repaired by hand, ``fork`` one.

``statesaga resolve ID --as compensated --note "refunded by hand"`` ends a
failed run with the note kept in its history; ``statesaga fork ID --from-step
STEP`` restarts a run from one of its steps as a new run. Both take an id or
the start of one, and ``--saga`` for the run's saga (the rules need its graph).
"""

from __future__ import annotations

import enum
import getpass
from typing import Annotated

import typer

from statesaga.cli._app import app
from statesaga.cli._common import (
    DbOption,
    JsonOption,
    ResourcesOption,
    SagaOption,
    opened,
    print_run,
    resolve_id,
)

__all__ = ["fork", "resolve"]

IdArgument = Annotated[str, typer.Argument(help="The run's id, or the start of it.")]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who acted, kept in the history (default: your login name)."),
]


class Outcome(enum.StrEnum):
    """What a failed run may be resolved as."""

    compensated = "compensated"
    completed = "completed"


def _who(by: str | None) -> str | None:
    if by is not None:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return None


@app.command()
def resolve(
    instance_id: IdArgument,
    outcome: Annotated[
        Outcome,
        typer.Option("--as", help="What the repair by hand amounts to: compensated or completed."),
    ],
    note: Annotated[
        str, typer.Option("--note", help="What was repaired, and how (kept in the history).")
    ],
    by: ByOption = None,
    saga: SagaOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark a failed run compensated or completed after a repair by hand, with a note."""
    with opened(db, saga) as engine:
        run = engine.resolve(
            resolve_id(engine, instance_id), outcome=outcome.value, note=note, by=_who(by)
        )
    print_run(run, as_json)


@app.command()
def fork(
    instance_id: IdArgument,
    from_step: Annotated[
        str,
        typer.Option("--from-step", help="The step (transition) the new run starts from."),
    ],
    note: Annotated[
        str | None, typer.Option("--note", help="Why, kept in both runs' histories.")
    ] = None,
    by: ByOption = None,
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restart a run from one of its steps as a new run (same input and correlation id)."""
    with opened(db, saga, resources) as engine:
        run = engine.fork(
            resolve_id(engine, instance_id), from_step=from_step, note=note, by=_who(by)
        )
    print_run(run, as_json)
