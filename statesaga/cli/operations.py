"""The operations commands: ``recover``, ``worker``, ``config``, ``cleanup``, ``stats`` and
``db upgrade``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from statesaga.cli._app import app, db_app
from statesaga.cli._common import (
    DbOption,
    JsonOption,
    ResourcesOption,
    SagaOption,
    consoles,
    opened,
    print_json,
    run_json,
    status_text,
    when,
)
from statesaga.cli.runs import saga_name
from statesaga.core import Status
from statesaga.errors import StateSagaError

if TYPE_CHECKING:
    from statesaga.engine import Engine
    from statesaga.run import Run

__all__ = ["cleanup", "config", "db_upgrade", "recover", "stats", "worker"]

_STATUSES = tuple(status.value for status in Status)


def _due(engine: Engine) -> int:
    """How many runs of the registered sagas need work now (for the progress bar)."""
    registered = {d.key for d in engine.definitions}
    rows = engine.store.due(engine.clock(), 10_000_000)
    return sum(1 for row in rows if (row.saga, row.version) in registered)


def drain(engine: Engine, batch: int, report: Callable[[int], None] | None = None) -> list[Run]:
    """Recover runs ``batch`` at a time until none is due; the runs, as they ended."""
    recovered: list[Run] = []
    seen: set[str] = set()
    while True:
        runs = engine.recover(limit=batch)
        fresh = [run for run in runs if run.id not in seen]
        recovered.extend(runs)
        seen.update(run.id for run in runs)
        if report is not None:
            report(len(runs))
        # a batch of runs all seen before is due again at once: the next call is a worker's job
        if not runs or not fresh:
            return recovered


@app.command()
def recover(
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    batch: Annotated[int, typer.Option(help="Runs claimed and driven at a time.")] = 100,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume every run that needs it (crashed holders, due retries, timeouts, deadlines),
    batch after batch until none is left."""
    if batch < 1:
        raise StateSagaError(f"--batch {batch} must be at least 1")
    with opened(db, saga, resources) as engine:
        if not engine.definitions:
            raise StateSagaError("recover needs the sagas' code: pass --saga MODULE:ATTR")
        if as_json or not consoles.err.is_terminal:
            runs = drain(engine, batch)
        else:
            from rich.progress import Progress

            with Progress(console=consoles.err, transient=True) as progress:
                task = progress.add_task("recovering runs", total=_due(engine))
                runs = drain(engine, batch, lambda done: progress.advance(task, done))
    if as_json:
        print_json([run_json(run) for run in runs])
        return
    counts = dict.fromkeys(_STATUSES, 0)
    for run in runs:
        counts[run.status.value] += 1
    summary = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    consoles.out.print(f"recovered {len(runs)} run(s){': ' + summary if summary else ''}")
    failed = [run for run in runs if run.status is Status.FAILED]
    if failed:
        table = Table(title=f"{len(failed)} failed run(s): see `statesaga show ID`")
        table.add_column("id", no_wrap=True)
        for column in ("saga", "state", "error"):
            table.add_column(column)
        for run in failed:
            error = "" if run.error is None else f"{run.error.type}: {run.error.message}"
            table.add_row(run.id, run.saga, run.state, escape(error))
        consoles.out.print(table)


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
    settings = Settings.load(
        database_url=db, worker_concurrency=concurrency, retention_days=retention_days
    )
    with opened(settings.database_url, saga, resources) as engine:
        if not engine.definitions:
            raise StateSagaError("the worker needs the sagas' code: pass --saga MODULE:ATTR")
        stop = threading.Event()
        # the signals stop the worker while it runs; the process's own handlers come back after
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
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
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@app.command()
def config(as_json: JsonOption = False) -> None:
    """Print the effective settings and where each came from."""
    from statesaga.settings import ENV_PREFIX, Settings

    settings = Settings.load()
    # a password in a URL is nobody's business on a terminal or in a CI log
    rows = [(name, _redact(value), source) for name, value, source in settings.rows()]
    if as_json:
        print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    table = Table(title="statesaga settings")
    for column in ("setting", "value", "source", "variable"):
        table.add_column(column)
    for name, value, source in rows:
        shown = "" if value is None else str(value)
        table.add_row(name, escape(shown), source, ENV_PREFIX + name.upper())
    consoles.out.print(table)


@app.command()
def cleanup(
    older_than: Annotated[
        str, typer.Option(help="Delete finished runs whose last transition is older: 30d, 12h.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    batch: Annotated[int, typer.Option(help="Runs deleted per transaction.")] = 500,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete completed and compensated runs (and their history); never failed or open ones."""
    from statesaga.retention import cleanup as run_cleanup
    from statesaga.settings import parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError:
        raise StateSagaError(
            f"--older-than {older_than!r} is not an age; pass e.g. 30d, 12h or 90m"
        ) from None
    if batch < 1:
        raise StateSagaError(f"--batch {batch} must be at least 1")
    with opened(db, read_only=True) as engine:
        if dry_run or as_json or not consoles.err.is_terminal:
            result = run_cleanup(engine.store, older_than=age, batch=batch, dry_run=dry_run)
        else:
            from rich.progress import Progress

            with Progress(console=consoles.err, transient=True) as progress:
                task = progress.add_task("deleting finished runs", total=None)

                def report(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                result = run_cleanup(engine.store, older_than=age, batch=batch, progress=report)
    if as_json:
        print_json({"instances": result.instances, "history": result.history, "dry_run": dry_run})
        return
    verb = "would delete" if dry_run else "deleted"
    consoles.out.print(
        f"{verb} {result.instances} run(s) and {result.history} history row(s) "
        f"finished more than {older_than} ago",
        highlight=False,
    )


@app.command()
def stats(
    window: Annotated[
        str, typer.Option(help="Look at runs whose last transition is this recent: 1h, 24h, 7d.")
    ] = "24h",
    saga: Annotated[
        str | None,
        typer.Option("--saga", "-s", help="Only this saga: its name, or MODULE:ATTR."),
    ] = None,
    registered: Annotated[
        list[str] | None,
        typer.Option(
            "--registered",
            envvar="STATESAGA_SAGAS",
            help="MODULE:ATTR (or MODULE) of the sagas your engines register (repeatable; "
            "default: the STATESAGA_SAGAS the worker uses): open runs of other versions of "
            "them are listed.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per status and the alert rates: failure rate, timeout rate, failed compensations."""
    from statesaga.cli._common import load_sagas
    from statesaga.cli.migrations import print_unregistered, unregistered_runs
    from statesaga.inspection import stats as compute_stats
    from statesaga.settings import parse_duration

    try:
        seconds = parse_duration(window)
    except ValueError:
        raise StateSagaError(f"--window {window!r} is not an age; pass e.g. 1h or 7d") from None
    name = saga_name(saga)
    with opened(db, read_only=True) as engine:
        now = time.time()
        report = compute_stats(engine.store, since=now - seconds, until=now, saga=name)
        definitions = [
            d
            for reference in registered or ()
            for item in reference.split(",")
            if item.strip()
            for d in load_sagas(item.strip())
        ]
        names = {d.name for d in definitions} if name is None else {name}
        stranded = unregistered_runs(engine.store, definitions, names=names) if definitions else []
    if as_json:
        unregistered = [{"saga": s, "version": v, "open_runs": n} for s, v, n in stranded]
        print_json(report.as_dict() | {"unregistered": unregistered})
        return
    table = Table(title=f"runs in the last {window} (since {when(report.since)} UTC)")
    table.add_column("status")
    table.add_column("runs", justify="right")
    for status in _STATUSES:
        table.add_row(status_text(status), str(report.counts.get(status, 0)))
    consoles.out.print(table)
    alerts = Table(title="alert rates (of finished runs)")
    for column in ("measure", "value", "alert when"):
        alerts.add_column(column)
    alerts.add_row("failure rate", f"{report.failure_rate:.1%}", "> 5%")
    alerts.add_row("timeout rate", f"{report.timeout_rate:.1%}", "> 2%")
    alerts.add_row("failed compensations", str(report.failed_compensations), "> 0")
    consoles.out.print(alerts)
    if stranded:
        print_unregistered(stranded)


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Option(help="Target revision (head: the newest).")] = "head",
) -> None:
    """Create or migrate the store's tables (alembic), in the schema setting's schema."""
    import sqlalchemy as sa

    from statesaga.cli._errors import explained
    from statesaga.settings import Settings
    from statesaga.store.migrate import current_revision, upgrade
    from statesaga.store.sql import _use_schema

    known = _revisions()
    if revision != "head" and revision not in known:
        raise StateSagaError(
            f"--revision {revision!r} is not a migration of the store; pass head or one of: "
            + ", ".join(known)
        )
    settings = Settings.load(database_url=db)
    url = settings.database_url
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
        raise StateSagaError(f"--db {url!r} is not a usable SQLAlchemy URL: {error}") from None
    schema = None if engine.dialect.name == "sqlite" else settings.schema
    if schema is not None:
        _use_schema(engine, schema, settings.app_schemas)
    try:
        with explained(url):
            upgrade(engine, revision, schema=schema)
            reached = current_revision(engine, schema)
    finally:
        engine.dispose()
    consoles.out.print(f"[green]store at revision {reached}[/]")


def _revisions() -> list[str]:
    """The store's migrations, oldest first."""
    from alembic.script import ScriptDirectory

    from statesaga.store.migrate import MIGRATIONS

    return [script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()][::-1]


def _redact(value: object) -> object:
    """``scheme://user:***@host`` for a URL holding a password; anything else as it is."""
    if isinstance(value, str):
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
    return value
