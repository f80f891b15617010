"""``statesaga migrate``: move runs of an older version onto the newer one that declares how,
and the runs whose version no loaded saga registers (for ``check`` and ``stats``).

The command takes the newer version's class (``--saga MODULE:ATTR``), not only
its name: the migration it declares (the state mapping and the context
function) is code, and the moved runs are checked against both graphs.
"""

from __future__ import annotations

from typing import Annotated, Any

import attrs
import typer
from rich.markup import escape
from rich.table import Table

from statesaga.cli._app import app
from statesaga.cli._common import DbOption, JsonOption, consoles, load_sagas, opened, print_json
from statesaga.definition import Definition
from statesaga.errors import StateSagaError
from statesaga.store.base import Store

__all__ = ["migrate", "print_unregistered", "unregistered_runs"]

_OPEN = ("running", "waiting", "compensating", "failed")


def unregistered_runs(
    store: Store, definitions: list[Definition], *, names: set[str] | None = None
) -> list[tuple[str, int, int]]:
    """``(saga, version, open runs)`` for each version of these sagas' names that none registers.

    ``names`` limits the sagas looked at (default: the names of ``definitions``).
    Runs that ended are left out: only open runs need their version's graph.
    """
    known = {d.key for d in definitions}
    wanted = {d.name for d in definitions} if names is None else names
    counts: dict[tuple[str, int], int] = {}
    for (saga, version, status), count in store.count_by_status().items():
        if saga in wanted and status in _OPEN and (saga, version) not in known:
            counts[saga, version] = counts.get((saga, version), 0) + count
    return [(saga, version, count) for (saga, version), count in sorted(counts.items())]


def print_unregistered(found: list[tuple[str, int, int]]) -> None:
    """The versions without a registered class, and what to do about their runs."""
    table = Table(title="unregistered versions")
    for column in ("saga", "version", "open runs"):
        table.add_column(column)
    for saga, version, count in found:
        table.add_row(escape(saga), str(version), str(count))
    consoles.out.print(table)
    consoles.out.print(
        "no engine with these sagas drives their open runs: move them with `statesaga "
        "migrate --saga MODULE:ATTR --from VERSION`, or keep that version's class registered",
        highlight=False,
    )


@app.command()
def migrate(
    saga: Annotated[
        str,
        typer.Option(
            "--saga",
            "-s",
            help="MODULE:ATTR of the newer version's class (it declares migrates_from).",
            show_default=False,
        ),
    ],
    from_version: Annotated[
        int, typer.Option("--from", help="The version whose runs move.", show_default=False)
    ],
    to_version: Annotated[
        int | None,
        typer.Option(
            "--to", help="The version they move to (default: --saga's).", show_default=False
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would move; write nothing.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Move at most this many runs (oldest first).")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move the waiting and due runs of an older version onto a newer one, each in its own
    transaction with a `migrated` history record."""
    definitions = load_sagas(saga)
    target = _target(saga, definitions, to_version)
    with opened(db, read_only=True) as engine:
        engine.register(*definitions)
        report = engine.migrate(
            target.name,
            from_version=from_version,
            to_version=target.version,
            dry_run=dry_run,
            limit=limit,
        )
    if as_json:
        print_json(attrs.asdict(report) | {"moved": len(report.moved)})
    else:
        _print(report)
    if report.failed:
        raise StateSagaError(
            f"{len(report.failed)} run(s) could not be migrated and were left on version "
            f"{from_version}; fix the context function (the reasons are above) and run it again"
        )


def _target(saga: str, definitions: list[Definition], to_version: int | None) -> Definition:
    names = sorted({d.name for d in definitions})
    if len(names) > 1:
        raise StateSagaError(
            f"{saga} defines several sagas ({', '.join(names)}); pass --saga MODULE:ATTR of "
            "the version to migrate onto"
        )
    versions = {d.version: d for d in definitions}
    version = max(versions) if to_version is None else to_version
    if version not in versions:
        raise StateSagaError(
            f"{saga} has no version {version} of {names[0]!r} (it has "
            f"{', '.join(str(v) for v in sorted(versions))}); pass --saga the class of version "
            f"{version}"
        )
    return versions[version]


def _print(report: Any) -> None:
    table = Table(
        title=f"{report.saga}: version {report.from_version} \u2192 {report.to_version}"
        + (" (dry run)" if report.dry_run else "")
    )
    for column in ("id", "status", "from", "to", "outcome", "reason"):
        table.add_column(column)
    for entry in report.entries:
        table.add_row(
            entry.instance_id,
            entry.status,
            entry.from_state,
            entry.to_state or "",
            entry.outcome,
            escape(entry.reason or ""),
        )
    if report.entries:
        consoles.out.print(table)
    verb = "would move" if report.dry_run else "moved"
    summary = (
        f"{verb} {len(report.moved)} run(s) of {report.saga} from version "
        f"{report.from_version} to {report.to_version}; {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed"
    )
    if report.dry_run:
        summary += "; nothing was written"
    consoles.out.print(escape(summary), highlight=False)
