"""The commands that start, inspect and steer runs: ``start``, ``send``, ``show``, ``list``,
``cancel`` and ``retry``.

A run is named by its id or by the start of it (``statesaga show 3f2a``), as
long as no other run's id starts the same way.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from statesaga.cli._app import UsageError, app
from statesaga.cli._common import (
    DbOption,
    JsonOption,
    ResourcesOption,
    SagaOption,
    consoles,
    load_sagas,
    opened,
    parse_json,
    print_delivery,
    print_json,
    print_run,
    resolve_id,
    run_json,
    status_text,
    when,
)
from statesaga.cli._family import family_json, family_tree
from statesaga.delivery import Delivery
from statesaga.errors import StateSagaError
from statesaga.run import HistoryEntry
from statesaga.serde import converter

__all__ = ["cancel", "list_runs", "retry", "send", "show", "start", "saga_name"]

IdArgument = Annotated[str, typer.Argument(help="The run's id, or the start of it.")]


def saga_name(given: str | None) -> str | None:
    """A saga's name from ``--saga``: the name itself, or MODULE:ATTR of its class."""
    if given is None or ":" not in given:
        return given
    (definition,) = load_sagas(given)[:1]
    return definition.name


@app.command()
def start(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of the saga to start.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Input as JSON, or @file.json.")
    ] = "{}",
    key: Annotated[str | None, typer.Option(help="Entity key the run locks.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Returns the existing run if reused.")
    ] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Carried on every record.")] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds from now the run must finish in.")
    ] = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run and drive it until it waits or ends; --json prints it with its history."""
    (definition,) = load_sagas(reference)[:1]
    given = parse_json(input, "--input")
    with opened(db, None, resources) as engine:
        run = engine.start(
            definition,
            given,
            key=key,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            deadline=deadline,
        )
        run = engine.get(run.id)
    print_run(run, as_json)


@app.command()
def send(
    event: Annotated[str, typer.Argument(help="The event's name.")],
    instance_id: Annotated[
        str | None, typer.Option("--id", help="The run's id (or the start of it).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="The run's entity key (with --saga).")] = None,
    payload: Annotated[str | None, typer.Option(help="Payload as JSON, or @file.json.")] = None,
    event_id: Annotated[
        str | None,
        typer.Option(help="The event's id: a second send with the same id is not applied again."),
    ] = None,
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send an event to a run (by --id, or by --key and --saga): recorded, then applied.

    The event goes to the run's inbox first; if the run is busy it stays pending and
    the run takes it as soon as it can (its holder, or a worker).
    """
    if (instance_id is None) == (key is None):
        raise UsageError(
            "name the run by --id ID, or by --key KEY with --saga MODULE:ATTR (one of them)"
        )
    if key is not None and not saga:
        raise UsageError("--key needs --saga MODULE:ATTR to know which saga's run it is")
    body = parse_json(payload, "--payload")
    with opened(db, saga, resources) as engine:
        if instance_id is not None:
            delivery = engine.send(
                event, body, instance_id=resolve_id(engine, instance_id), event_id=event_id
            )
        else:
            delivery = engine.send(
                event, body, saga=engine.definitions[0], key=key, event_id=event_id
            )
    print_delivery(delivery, as_json)


@app.command()
def show(
    instance_id: IdArgument,
    saga: SagaOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a run: its status, error, context, history, and its parent and child runs."""
    with opened(db, saga, read_only=True) as engine:
        run = engine.get(resolve_id(engine, instance_id))
        if as_json:
            children = family_json(engine, run.id)
            # (a run without children reads as ``start --json`` prints it)
            print_json({**run_json(run), **({"children": children} if children else {})})
            return
        family = family_tree(engine, run, status_text)
    print_run(run, False)
    if family is not None:
        consoles.out.print("[bold]sagas[/] (parent and child runs)", highlight=False)
        consoles.out.print(family, highlight=False)
    consoles.out.print(
        "[bold]context[/] " + escape(json.dumps(converter.unstructure(run.data))),
        highlight=False,
    )
    table = Table(title="history")
    for column in (
        "#",
        "kind",
        "transition",
        "step",
        "from",
        "to",
        "attempt",
        "ms",
        "error or note",
        "at",
    ):
        table.add_column(column)
    for number, entry in enumerate(run.history, 1):
        table.add_row(
            str(number),
            entry.kind.value,
            entry.transition or "",
            entry.step or "",
            entry.from_state,
            entry.to_state,
            str(entry.attempt),
            f"{entry.duration * 1000:.1f}",
            _said(entry),
            when(entry.finished_at),
        )
    consoles.out.print(table)
    if run.inbox:
        inbox = Table(title="inbox")
        for column in ("event id", "kind", "event", "status", "reason", "received", "settled"):
            inbox.add_column(column)
        for item in run.inbox:
            inbox.add_row(
                escape(item.event_id),
                item.kind,
                escape(item.event or ""),
                status_text(item.status.value),
                escape(item.reason or ""),
                when(item.received_at),
                "" if item.settled_at is None else when(item.settled_at),
            )
        consoles.out.print(inbox)


def _said(entry: HistoryEntry) -> str:
    """A history entry's error, or an operator's note (who, and the run it links)."""
    if entry.error is not None:
        return escape(f"{entry.error.type}: {entry.error.message}")
    parts = [entry.note or ""]
    if entry.by:
        parts.append(f"(by {entry.by})")
    if entry.link:
        parts.append(f"[run {entry.link}]")
    return escape(" ".join(p for p in parts if p))


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    saga: Annotated[
        str | None,
        typer.Option("--saga", "-s", help="Only this saga: its name, or MODULE:ATTR."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only runs on this entity key.")] = None,
    correlation_id: Annotated[
        str | None, typer.Option(help="Only runs with this correlation id.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only runs started at or after this (ISO time, or an age: 2h, 7d)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only runs started before this (ISO time, or an age).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    from statesaga.core import Status
    from statesaga.inspection import parse_time

    if status is not None and status not in {s.value for s in Status}:
        raise StateSagaError(
            f"--status {status!r} is not a status; use " + ", ".join(s.value for s in Status)
        )
    name = saga_name(saga)
    with opened(db, read_only=True) as engine:
        runs = engine.list(
            saga=name,
            status=status,
            key=key,
            correlation_id=correlation_id,
            since=None if since is None else parse_time(since),
            until=None if until is None else parse_time(until),
            limit=limit,
        )
    if as_json:
        print_json([run_json(run) for run in runs])
        return
    table = Table(title=f"{len(runs)} run(s)")
    table.add_column("id", no_wrap=True)
    for column in ("saga", "status", "state", "key", "updated"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.id,
            f"{run.saga} v{run.version}",
            status_text(run.status.value),
            run.state,
            escape(run.key or ""),
            when(run.updated_at),
        )
    consoles.out.print(table)


def _act(
    name: str,
    instance_id: str,
    saga: list[str] | None,
    resources: list[str] | None,
    db: str | None,
    as_json: bool,
) -> None:
    with opened(db, saga, resources) as engine:
        result = getattr(engine, name)(resolve_id(engine, instance_id))
    if isinstance(result, Delivery):
        print_delivery(result, as_json)
    else:
        print_run(result, as_json)


@app.command()
def cancel(
    instance_id: IdArgument,
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a run before its pivot; it compensates what it did."""
    _act("cancel", instance_id, saga, resources, db, as_json)


@app.command()
def retry(
    instance_id: IdArgument,
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Try a failed run again (its compensation, or its step past the pivot)."""
    _act("retry", instance_id, saga, resources, db, as_json)
