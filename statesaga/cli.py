"""The ``statesaga`` command: check, run, inspect and recover sagas.

Every command works on the store the settings name (``sqlite:///statesaga.db``
unless ``--db``, ``STATESAGA_DATABASE_URL`` or a TOML file says otherwise; see
``statesaga config``); tables are for people, ``--json`` is for scripts.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from statesaga.definition import Definition
from statesaga.errors import StateSagaError
from statesaga.serde import converter

__all__ = ["app", "main"]

DEFAULT_DB = "sqlite:///statesaga.db"

app = typer.Typer(
    name="statesaga",
    help="Durable sagas as declarative state machines: check, run, inspect and recover them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class _Consoles:
    """Consoles made on use, so that the terminal's width is read when printing."""

    @property
    def out(self) -> Console:
        return Console()

    @property
    def err(self) -> Console:
        return Console(stderr=True)


_consoles = _Consoles()

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy URL of the store (default: the database_url setting).",
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
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Print statesaga's errors as one clear line and exit non-zero."""
    try:
        yield
    except StateSagaError as error:
        _consoles.err.print(
            f"[bold red]error:[/] {type(error).__name__}: {escape(str(error))}", highlight=False
        )
        raise typer.Exit(1) from None


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
            "Python path, e.g. definitions.checkout:CompleteCart"
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
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise StateSagaError(
            f"cannot import {module_name!r} ({error}); pass MODULE:ATTR of a module on the "
            "Python path, e.g. definitions.checkout:resources"
        ) from None
    value = getattr(module, attr, None) if attr else None
    if value is None:
        raise StateSagaError(
            f"{reference} names nothing: pass MODULE:ATTR of a list of resources or of a "
            "function returning one, e.g. definitions.checkout:resources"
        )
    if callable(value) and not isinstance(value, type):
        value = value()
    if not isinstance(value, list | tuple):
        raise StateSagaError(
            f"{reference} gave a {type(value).__name__}; it must be (or return) a list of "
            "the objects the steps ask for with ctx.resource(...)"
        )
    return list(value)


def _engine(
    db: str | None, sagas: list[str] | None = None, resources: list[str] | None = None
) -> Any:
    """An engine from the settings (environment, TOML), ``--db`` winning over them."""
    from statesaga.engine import Engine

    given = [item for reference in resources or () for item in load_resources(reference)]
    engine = Engine.from_settings(database_url=db, resources=given)
    for reference in sagas or ():
        for item in reference.split(","):
            if item.strip():
                engine.register(*load_sagas(item.strip()))
    return engine


@contextmanager
def _opened(
    db: str | None, sagas: list[str] | None = None, resources: list[str] | None = None
) -> Iterator[Any]:
    """An engine for one command (see :func:`_engine`), closed when it is done."""
    engine = _engine(db, sagas, resources)
    try:
        yield engine
    finally:
        engine.close()


def _parse_json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise StateSagaError(
            f"{what} is not valid JSON ({error}); pass e.g. '{{\"id\": 1}}'"
        ) from None


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _print_run(run: Any, as_json: bool) -> None:
    if as_json:
        _consoles.out.print_json(json.dumps(_run_json(run)))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", run.id)
    table.add_row("saga", f"{run.saga} v{run.version}")
    table.add_row("status", _status(run.status.value))
    table.add_row("state", run.state)
    table.add_row("key", run.key or "")
    table.add_row("correlation id", run.correlation_id)
    if run.output is not None:
        table.add_row("output", json.dumps(converter.unstructure(run.output)))
    if run.error is not None:
        table.add_row("error", f"{run.error.type}: {run.error.message}")
    _consoles.out.print(table)


def _status(status: str) -> str:
    colour = {
        "completed": "green",
        "compensated": "yellow",
        "failed": "red",
        "waiting": "cyan",
    }.get(status, "blue")
    return f"[{colour}]{status}[/]"


def _run_json(run: Any) -> dict[str, Any]:
    data: dict[str, Any] = converter.unstructure(run)
    data["status"] = run.status.value
    for entry in data.get("history", ()):
        entry["kind"] = str(entry["kind"])
    return data


@app.command()
def check(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of a saga, or MODULE.")],
    as_json: JsonOption = False,
) -> None:
    """Import and validate saga definitions; print their states and transitions."""
    with _errors():
        definitions = load_sagas(reference)
    if as_json:
        _consoles.out.print_json(
            json.dumps(
                [
                    {
                        "name": d.name,
                        "version": d.version,
                        "graph_hash": d.graph_hash,
                        "states": list(d.states),
                        "transitions": list(d.transitions),
                    }
                    for d in definitions
                ]
            )
        )
        return
    for d in definitions:
        table = Table(title=f"{d.name} v{d.version}  (graph {d.graph_hash})")
        for column in ("transition", "from", "to", "trigger", "step", "compensation", "marks"):
            table.add_column(column)
        for t in d.transitions.values():
            trigger = (
                f"event {t.event}"
                if t.event
                else "timeout"
                if t.on_timeout
                else f"when {t.guard_name}"
                if t.guard
                else "auto"
            )
            marks = []
            if t.step is not None:
                marks += [
                    m
                    for m, on in (
                        ("pivot", t.step.pivot),
                        ("read-only", t.step.read_only),
                        ("transactional", t.step.transactional),
                    )
                    if on
                ]
            table.add_row(
                t.name,
                t.source,
                t.target,
                trigger,
                t.step.function_name if t.step else "",
                (t.step.compensation_name or "") if t.step else "",
                ", ".join(marks),
            )
        _consoles.out.print(table)
        _consoles.out.print(
            f"[green]ok[/]: {len(d.states)} states, {len(d.transitions)} transitions"
        )


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
    deadline: Annotated[float | None, typer.Option(help="Run deadline in seconds.")] = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run and drive it until it waits or ends."""
    with _errors():
        (definition,) = load_sagas(reference)[:1]
        with _opened(db, None, resources) as engine:
            run = engine.start(
                definition,
                _parse_json(input, "--input"),
                key=key,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                deadline=deadline,
            )
    _print_run(run, as_json)


@app.command()
def send(
    event: Annotated[str, typer.Argument(help="The event's name.")],
    instance_id: Annotated[str | None, typer.Option("--id", help="The run's id.")] = None,
    key: Annotated[str | None, typer.Option(help="The run's entity key (with --saga).")] = None,
    payload: Annotated[str | None, typer.Option(help="Payload as JSON, or @file.json.")] = None,
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send an event to a waiting run and drive it on."""
    with _errors(), _opened(db, saga, resources) as engine:
        target_saga = None
        if key is not None:
            if not engine.definitions:
                raise StateSagaError("--key needs --saga MODULE:ATTR to know which saga")
            target_saga = engine.definitions[0]
        run = engine.send(
            event,
            _parse_json(payload, "--payload"),
            instance_id=instance_id,
            saga=target_saga,
            key=key,
        ).run
    _print_run(run, as_json)


@app.command()
def show(
    instance_id: Annotated[str, typer.Argument(help="The run's id.")],
    saga: SagaOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a run: its status, error, context and history."""
    with _errors(), _opened(db, saga) as engine:
        run = engine.get(instance_id)
    if as_json:
        _consoles.out.print_json(json.dumps(_run_json(run)))
        return
    _print_run(run, False)
    _consoles.out.print(
        "[bold]context[/] " + json.dumps(converter.unstructure(run.data)), highlight=False
    )
    table = Table(title="history")
    for column in ("#", "kind", "transition", "step", "from", "to", "attempt", "ms", "error", "at"):
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
            "" if entry.error is None else f"{entry.error.type}: {entry.error.message}",
            _when(entry.finished_at),
        )
    _consoles.out.print(table)


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    saga_name: Annotated[str | None, typer.Option("--saga-name", help="Only this saga.")] = None,
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
    from statesaga.inspection import parse_time

    with _errors(), _opened(db) as engine:
        try:
            runs = engine.list(
                saga=saga_name,
                status=status,
                key=key,
                correlation_id=correlation_id,
                since=None if since is None else parse_time(since),
                until=None if until is None else parse_time(until),
                limit=limit,
            )
        except ValueError:
            raise StateSagaError(
                f"--status {status!r} is not a status; use running, waiting, "
                "compensating, completed, compensated or failed"
            ) from None
    if as_json:
        _consoles.out.print_json(json.dumps([_run_json(run) for run in runs]))
        return
    table = Table(title=f"{len(runs)} run(s)")
    for column in ("id", "saga", "status", "state", "key", "updated"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.id,
            f"{run.saga} v{run.version}",
            _status(run.status.value),
            run.state,
            run.key or "",
            _when(run.updated_at),
        )
    _consoles.out.print(table)


def _act(
    name: str,
    instance_id: str,
    saga: list[str] | None,
    resources: list[str] | None,
    db: str | None,
    as_json: bool,
) -> None:
    with _errors(), _opened(db, saga, resources) as engine:
        result = getattr(engine, name)(instance_id)
    _print_run(getattr(result, "run", result), as_json)


@app.command()
def cancel(
    instance_id: Annotated[str, typer.Argument(help="The run's id.")],
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a run before its pivot; it compensates what it did."""
    _act("cancel", instance_id, saga, resources, db, as_json)


@app.command()
def retry(
    instance_id: Annotated[str, typer.Argument(help="The run's id.")],
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Try a failed run again (its compensation, or its step past the pivot)."""
    _act("retry", instance_id, saga, resources, db, as_json)


@app.command()
def recover(
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 1000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume every run that needs it: crashed holders, due retries, timeouts, deadlines."""
    with _errors():
        engine = _engine(db, saga, resources)
        if not engine.definitions:
            engine.close()
            raise StateSagaError("recover needs the sagas' code: pass --saga MODULE:ATTR")
        try:
            runs = engine.recover(limit=limit)
        finally:
            engine.close()
    if as_json:
        _consoles.out.print_json(json.dumps([_run_json(run) for run in runs]))
        return
    table = Table(title=f"recovered {len(runs)} run(s)")
    for column in ("id", "saga", "status", "state"):
        table.add_column(column)
    for run in runs:
        table.add_row(run.id, run.saga, _status(run.status.value), run.state)
    _consoles.out.print(table)


@app.command()
def worker(
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Threads driving runs at once (default: worker_concurrency)."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds to wait when there is nothing to do.")] = 1.0,
    batch: Annotated[int, typer.Option(help="Runs a thread claims at a time.")] = 10,
    log_every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 30.0,
    retention_days: Annotated[
        int | None,
        typer.Option(
            help="Delete completed and compensated runs older than this many days, hourly "
            "(default: the retention_days setting; none: keep them)."
        ),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
    db: DbOption = None,
) -> None:
    """Run until SIGTERM or Ctrl-C: recover crashed runs, fire timeouts, deadlines, retries."""
    import signal
    import threading

    from statesaga.logging import configure
    from statesaga.settings import Settings
    from statesaga.worker import Worker

    configure(json_lines=log_json)
    with _errors():
        settings = Settings.load(
            database_url=db, worker_concurrency=concurrency, retention_days=retention_days
        )
        engine = _engine(settings.database_url, saga, resources)
        if not engine.definitions:
            engine.close()
            raise StateSagaError("the worker needs the sagas' code: pass --saga MODULE:ATTR")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            Worker(
                engine,
                concurrency=settings.worker_concurrency,
                retention_days=settings.retention_days,
                poll_interval=poll,
                batch=batch,
                log_every=log_every,
            ).run(stop)
        finally:
            engine.close()


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the store's tables (alembic), in the ``schema`` setting's schema."""
    import sqlalchemy as sa

    from statesaga.settings import Settings
    from statesaga.store.migrate import current_revision, upgrade
    from statesaga.store.sql import _use_schema

    with _errors():
        settings = Settings.load(database_url=db)
        db = settings.database_url
        try:
            engine = sa.create_engine(db)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise StateSagaError(f"--db {db!r} is not a usable SQLAlchemy URL: {error}") from None
        if settings.schema is not None and engine.dialect.name != "sqlite":
            _use_schema(engine, settings.schema)
        try:
            upgrade(engine, revision)
            _consoles.out.print(f"[green]store at revision {current_revision(engine)}[/]")
        finally:
            engine.dispose()


@app.command()
def demo(
    db: DbOption = None,
) -> None:
    """Run the checkout demo on a SQLite file: success, decline, 3-D Secure, a race."""
    from definitions.checkout.demo import run_demo

    with _errors():
        run_demo(db or "sqlite:///statesaga-demo.db", _consoles.out)


@app.command()
def diagram(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of the saga to draw.")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="dot, svg, png, pdf, mermaid or markdown (default: from -o's suffix, else dot).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of printing.")
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Overlay the path of the run with this id.")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Draw the changes since this git revision (e.g. HEAD~1), or since MODULE:ATTR.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Draw nothing; fail if -o FILE is not up to date."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Draw a saga (DOT, SVG, PNG, PDF, Mermaid, Markdown), a run's path on it, or what changed."""
    from statesaga import diagram as diagrams

    try:
        definitions = load_sagas(reference)
        if len(definitions) > 1:
            raise StateSagaError(f"{reference} defines several sagas; pass MODULE:ATTR of one")
        (definition,) = definitions
        fmt = diagrams.format_for(output, format)
        again = [reference]
        if instance is not None and against is not None:
            raise StateSagaError("--instance and --against draw different things; pass one")
        if instance is not None:
            engine = _engine(db)
            try:
                run = engine.get(instance)
            finally:
                engine.close()
            drawing = diagrams.overlay(diagrams.from_definition(definition), run)
            again += ["--instance", instance, *(["--db", db] if db else [])]
        elif against is not None:
            if ":" in against:  # a git revision never holds a colon
                (old,) = load_sagas(against)[:1]
            else:
                old = diagrams.definition_at(definition, against)
            drawing = diagrams.diff(old, definition, since=against)
            again += ["--against", against]
        else:
            drawing = diagrams.from_definition(definition)
        if check:
            if output is None:
                raise StateSagaError("--check needs -o FILE, the committed diagram to check")
            try:
                diagrams.check_file(drawing, fmt, output)
            except diagrams.DiagramError as error:
                redraw = " ".join(["statesaga diagram", *again, "--format", fmt, "-o", str(output)])
                raise diagrams.DiagramError(f"{error.message}; redraw it with: {redraw}") from None
            _consoles.err.print(f"[green]ok[/]: {escape(str(output))} is up to date")
            return
        data = diagrams.draw(drawing, fmt)
        if output is not None:
            output.write_bytes(data)
            _consoles.err.print(f"wrote {escape(str(output))}", highlight=False)
        elif fmt in diagrams.TEXT_FORMATS:
            sys.stdout.write(data.decode())
        elif sys.stdout.isatty():
            raise StateSagaError(f"{fmt.upper()} is binary; pass -o FILE or pipe it to a file")
        else:
            sys.stdout.buffer.write(data)
    except StateSagaError as error:
        # as _errors() does, but as plain text: messages name extras like statesaga[diagrams]
        message = escape(f"{type(error).__name__}: {error}")
        _consoles.err.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(1) from None


def main() -> None:
    """Entry point of the ``statesaga`` console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


# the operations commands (config, cleanup, stats) register themselves on ``app``
from statesaga import _cli_ops  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover - `python -m statesaga.cli`
    # run the imported module's app, the one the operations commands registered on
    from statesaga.cli import main as _main

    _main()
