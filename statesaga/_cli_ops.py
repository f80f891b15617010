"""The operations commands of ``statesaga``: ``config``, ``cleanup`` and ``stats``."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from statesaga.cli import (
    DbOption,
    JsonOption,
    _consoles,
    _engine,
    _errors,
    _status,
    _when,
    app,
)
from statesaga.errors import StateSagaError

__all__ = ["cleanup", "config", "stats"]


@app.command()
def config(as_json: JsonOption = False) -> None:
    """Print the effective settings and where each came from."""
    from statesaga.settings import ENV_PREFIX, Settings

    with _errors():
        settings = Settings.load()
    # a password in a URL is nobody's business on a terminal or in a CI log
    rows = [(name, _redact(value), source) for name, value, source in settings.rows()]
    if as_json:
        _consoles.out.print_json(
            json.dumps({name: {"value": value, "source": source} for name, value, source in rows})
        )
        return
    table = Table(title="statesaga settings")
    for column in ("setting", "value", "source", "variable"):
        table.add_column(column)
    for name, value, source in rows:
        shown = "" if value is None else str(value)
        table.add_row(name, escape(shown), source, ENV_PREFIX + name.upper())
    _consoles.out.print(table)


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
    from rich.progress import Progress

    from statesaga.retention import cleanup as run_cleanup
    from statesaga.settings import parse_duration

    with _errors():
        try:
            age = parse_duration(older_than)
        except ValueError:
            raise StateSagaError(
                f"--older-than {older_than!r} is not an age; pass e.g. 30d, 12h or 90m"
            ) from None
        if batch < 1:
            raise StateSagaError(f"--batch {batch} must be at least 1")
        engine = _engine(db)
        try:
            if dry_run or as_json or not sys.stderr.isatty():
                result = run_cleanup(engine.store, older_than=age, batch=batch, dry_run=dry_run)
            else:
                with Progress(console=_consoles.err, transient=True) as progress:
                    task = progress.add_task("deleting finished runs", total=None)

                    def report(done: int, total: int) -> None:
                        progress.update(task, completed=done, total=total)

                    result = run_cleanup(engine.store, older_than=age, batch=batch, progress=report)
        finally:
            engine.close()
    if as_json:
        _consoles.out.print_json(
            json.dumps(
                {"instances": result.instances, "history": result.history, "dry_run": dry_run}
            )
        )
        return
    verb = "would delete" if dry_run else "deleted"
    _consoles.out.print(
        f"{verb} {result.instances} run(s) and {result.history} history row(s) "
        f"finished more than {older_than} ago",
        highlight=False,
    )


@app.command()
def stats(
    window: Annotated[
        str, typer.Option(help="Look at runs whose last transition is this recent: 1h, 24h, 7d.")
    ] = "24h",
    saga_name: Annotated[str | None, typer.Option("--saga-name", help="Only this saga.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per status and the alert rates: failure rate, timeout rate, failed compensations."""
    from statesaga.inspection import stats as compute_stats
    from statesaga.settings import parse_duration

    with _errors():
        try:
            seconds = parse_duration(window)
        except ValueError:
            raise StateSagaError(f"--window {window!r} is not an age; pass e.g. 1h or 7d") from None
        engine = _engine(db)
        try:
            now = time.time()
            report = compute_stats(engine.store, since=now - seconds, until=now, saga=saga_name)
        finally:
            engine.close()
    if as_json:
        _consoles.out.print_json(json.dumps(report.as_dict()))
        return
    table = Table(title=f"runs in the last {window} (since {_when(report.since)} UTC)")
    table.add_column("status")
    table.add_column("runs", justify="right")
    for status in ("running", "waiting", "compensating", "completed", "compensated", "failed"):
        table.add_row(_status(status), str(report.counts.get(status, 0)))
    _consoles.out.print(table)
    alerts = Table(title="alert rates (of finished runs)")
    for column in ("measure", "value", "alert when"):
        alerts.add_column(column)
    alerts.add_row("failure rate", f"{report.failure_rate:.1%}", "> 5%")
    alerts.add_row("timeout rate", f"{report.timeout_rate:.1%}", "> 2%")
    alerts.add_row("failed compensations", str(report.failed_compensations), "> 0")
    _consoles.out.print(alerts)


def _redact(value: object) -> object:
    """``scheme://user:***@host`` for a URL holding a password; anything else as it is."""
    if isinstance(value, str):
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
    return value
