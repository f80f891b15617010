"""What the commands share: options, consoles, loading sagas, opening the store, printing runs.

Tables are for people and never cut an id: piped output is as wide as it
needs to be. ``--json`` is for scripts, with ISO 8601 times.

>>> iso(0.5)
'1970-01-01T00:00:00.500+00:00'
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from statesaga.cli._errors import explained
from statesaga.definition import Definition
from statesaga.delivery import Delivery
from statesaga.errors import InstanceNotFound, StateSagaError
from statesaga.serde import converter

if TYPE_CHECKING:
    from statesaga.engine import Engine
    from statesaga.run import Run

__all__ = [
    "DbOption",
    "JsonOption",
    "ResourcesOption",
    "SagaOption",
    "consoles",
    "iso",
    "load_resources",
    "load_sagas",
    "open_engine",
    "opened",
    "parse_json",
    "print_json",
    "print_run",
    "resolve_id",
    "run_json",
    "status_text",
    "when",
]


class _Consoles:
    """Consoles made on use, so that the terminal (or the pipe) is looked at when printing."""

    @property
    def out(self) -> Console:
        return _console(stderr=False)

    @property
    def err(self) -> Console:
        return _console(stderr=True)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        # a pipe or a file: lay tables out at their natural width, never cut an id
        console = Console(stderr=stderr, width=10_000, no_color=True)
    return console


consoles = _Consoles()

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy URL of the store (default: the database_url setting, "
        "sqlite:///statesaga.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
SagaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--saga",
        "-s",
        envvar="STATESAGA_SAGAS",
        help="MODULE:ATTR of a saga to register (repeatable); needed to drive its runs.",
        show_default=False,
    ),
]
ResourcesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--resources",
        "-r",
        envvar="STATESAGA_RESOURCES",
        help="MODULE:ATTR of the resources the steps need (a list, or a function returning "
        "one), e.g. definitions.checkout:resources (repeatable).",
        show_default=False,
    ),
]


def load_sagas(reference: str) -> list[Definition]:
    """Import ``MODULE:ATTR`` (one saga) or ``MODULE`` (every saga it defines)."""
    module_name, _, attr = reference.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise StateSagaError(
            f"cannot import {module_name!r} ({error}); pass MODULE:ATTR of a module on the "
            "Python path, e.g. mypackage.sagas:Payout"
        ) from None
    if attr:
        value = getattr(module, attr, None)
        definition = getattr(value, "definition", value)
        if not isinstance(definition, Definition):
            raise StateSagaError(f"{reference} is not a Saga class; point at one")
        return [definition]
    found = []
    for value in vars(module).values():
        definition = getattr(value, "definition", None)
        if isinstance(definition, Definition) and definition not in found:
            found.append(definition)
    if not found:
        raise StateSagaError(f"module {module_name!r} defines no Saga class")
    return found


def load_resources(reference: str) -> list[object]:
    """The objects ``MODULE:ATTR`` names: a list of them, or a function that returns one."""
    module_name, _, attr = reference.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise StateSagaError(
            f"cannot import {module_name!r} ({error}); pass MODULE:ATTR of a module on the "
            "Python path, e.g. mypackage.resources:resources"
        ) from None
    value = getattr(module, attr, None) if attr else None
    if value is None:
        raise StateSagaError(
            f"{reference} names nothing: pass MODULE:ATTR of a list of resources or of a "
            "function returning one, e.g. mypackage.resources:resources"
        )
    if callable(value) and not isinstance(value, type):
        value = value()
    if not isinstance(value, list | tuple):
        raise StateSagaError(
            f"{reference} gave a {type(value).__name__}; it must be (or return) a list of "
            "the objects the steps ask for with ctx.resource(...)"
        )
    return list(value)


def open_engine(
    db: str | None,
    sagas: list[str] | None = None,
    resources: list[str] | None = None,
    *,
    read_only: bool = False,
) -> Engine:
    """An engine on the settings' store (``--db`` wins); the caller closes it.

    A read-only command (``show``, ``list``, ``stats``...) never creates a
    database: a SQLite file that does not exist, or a database without the
    store's tables, is an error that says how to make one.
    """
    from statesaga.engine import Engine
    from statesaga.settings import Settings

    settings = Settings.load(database_url=db)
    url = settings.database_url
    given = [item for reference in resources or () for item in load_resources(reference)]
    if read_only:
        from statesaga.store.sql import SqlStore

        _must_exist(url)
        with explained(url):
            engine = Engine(
                SqlStore(url, schema=settings.schema, auto_migrate=False),
                lease_ttl=settings.lease_duration,
                resources=given,
            )
    else:
        with explained(url):
            engine = Engine.from_settings(settings, resources=given)
    try:
        for reference in sagas or ():
            for item in reference.split(","):
                if item.strip():
                    engine.register(*load_sagas(item.strip()))
    except BaseException:
        engine.close()
        raise
    return engine


@contextmanager
def opened(
    db: str | None,
    sagas: list[str] | None = None,
    resources: list[str] | None = None,
    *,
    read_only: bool = False,
) -> Iterator[Engine]:
    """:func:`open_engine`, closed when the command is done; the database's errors explained."""
    from statesaga.settings import Settings

    engine = open_engine(db, sagas, resources, read_only=read_only)
    try:
        with explained(Settings.load(database_url=db).database_url):
            yield engine
    finally:
        engine.close()


def _must_exist(url: str) -> None:
    """Fail when ``url`` names a SQLite file that is not there (opening it would create it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # the store says what is wrong with the URL
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(parsed.database).exists():
        raise StateSagaError(
            f"there is no store at {parsed.database} (no run was started there); pass --db "
            "the store's URL (`statesaga config` shows the one in use)"
        )


def resolve_id(engine: Engine, given: str) -> str:
    """The id of the one run whose id is ``given`` or starts with it."""
    if engine.store.get(given) is not None:
        return given
    matches = engine.store.ids_starting_with(given, limit=4)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InstanceNotFound(
            f"no run has an id starting with {given!r}; `statesaga list` shows the runs",
            instance_id=given,
        )
    shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
    raise StateSagaError(f"{given!r} starts several runs' ids ({shown}); pass more of the id")


def parse_json(value: str | None, what: str) -> Any:
    """JSON from an option: inline, or ``@file.json``."""
    if value is None:
        return None
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text()
        except OSError as error:
            raise StateSagaError(
                f"{what} {value}: cannot read {path} ({error.strerror}); pass @FILE of an "
                "existing JSON file, or the JSON itself"
            ) from None
    else:
        text = value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise StateSagaError(
            f"{what} is not valid JSON ({error}); pass e.g. '{{\"id\": 1}}'"
        ) from None


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 (UTC, milliseconds) of epoch seconds, for JSON."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def when(timestamp: float | None) -> str:
    """A time for a table: ``2026-11-26 09:00:00.123`` (UTC)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def status_text(status: str) -> str:
    """The status, coloured for a terminal."""
    colour = {
        "completed": "green",
        "compensated": "yellow",
        "failed": "red",
        "waiting": "cyan",
    }.get(status, "blue")
    return f"[{colour}]{status}[/]"


def run_json(run: Run) -> dict[str, Any]:
    """A run as JSON: its fields, status and kinds as strings, times in ISO 8601."""
    data: dict[str, Any] = converter.unstructure(run)
    data["status"] = run.status.value
    data["created_at"] = iso(run.created_at)
    data["updated_at"] = iso(run.updated_at)
    for entry in data.get("history", ()):
        entry["kind"] = str(entry["kind"])
        entry["started_at"] = iso(entry["started_at"])
        entry["finished_at"] = iso(entry["finished_at"])
    for entry in data.get("inbox", ()):
        entry["status"] = str(entry["status"])
        entry["received_at"] = iso(entry["received_at"])
        entry["settled_at"] = None if entry["settled_at"] is None else iso(entry["settled_at"])
    return data


def print_delivery(delivery: Delivery, as_json: bool) -> None:
    """What became of an event or cancel, then the run as it now stands."""
    if as_json:
        print_json(
            {
                "event_id": delivery.event_id,
                "event": delivery.event,
                "status": delivery.status.value,
                "reason": delivery.reason,
                "duplicate": delivery.duplicate,
                "run": run_json(delivery.run),
            }
        )
        return
    what = f"event {delivery.event!r}" if delivery.event else "cancel"
    said = {
        "accepted": "accepted",
        "pending": "recorded; the run takes it as soon as it is free (a worker, or its holder)",
        "rejected": f"not accepted: {delivery.reason}",
    }[delivery.status.value]
    again = " (a duplicate of the one sent before)" if delivery.duplicate else ""
    consoles.out.print(
        f"{escape(what)} {delivery.event_id}{again}: {escape(said)}", highlight=False
    )
    print_run(delivery.run, False)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    consoles.out.print_json(json.dumps(value))


def print_run(run: Run, as_json: bool) -> None:
    """A run's summary as a two-column table, or the whole run as JSON."""
    if as_json:
        print_json(run_json(run))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("id", run.id)
    table.add_row("saga", f"{run.saga} v{run.version}")
    table.add_row("status", status_text(run.status.value))
    table.add_row("state", run.state)
    table.add_row("key", escape(run.key or ""))
    table.add_row("correlation id", escape(run.correlation_id))
    if run.output is not None:
        table.add_row("output", escape(json.dumps(converter.unstructure(run.output))))
    if run.error is not None:
        table.add_row("error", escape(f"{run.error.type}: {run.error.message}"))
    consoles.out.print(table)
