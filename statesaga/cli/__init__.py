"""The ``statesaga`` command: check, run, inspect, recover and draw sagas.

Every command works on the store the settings name (``sqlite:///statesaga.db``
unless ``--db``, ``STATESAGA_DATABASE_URL`` or a TOML file says otherwise; see
``statesaga config``); tables are for people, ``--json`` is for scripts. An
error is one or two lines naming the problem and the fix (exit status 1; 2
for a usage error), never a traceback.

The commands live in small modules that register on one Typer app:
``check``, ``runs`` (start, send, show, list, cancel, retry), ``operations``
(recover, worker, config, cleanup, stats, db upgrade), ``migrations`` (migrate),
``diagrams`` and ``web``
(the ``ui`` command).
"""

from __future__ import annotations

import os

from statesaga.cli import check, diagrams, migrations, operations, repair, runs, web
from statesaga.cli._app import app

__all__ = ["app", "main"]

_COMMANDS = (
    check,
    runs,
    repair,
    operations,
    migrations,
    diagrams,
    web,
)  # imported for the commands they register


def main() -> None:
    """Entry point of the ``statesaga`` console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
