"""What the benchmarks share: where the databases are, the environment, tables and JSON.

Every benchmark writes into a database of its own: a SQLite file in a
temporary directory, or a PostgreSQL schema created for the run and dropped
after it (``postgres_schema``). Pools stay small: the PostgreSQL server is
shared.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statesaga.store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_POSTGRES = os.environ.get(
    "STATESAGA_BENCH_POSTGRES_URL",
    os.environ.get(
        "STATESAGA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
)

console = Console(width=None if sys.stdout.isatty() else 180)


def schema_url(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def postgres_schema(url: str, prefix: str) -> Iterator[str]:
    """A migrated schema of this run's own on ``url``; its URL. Dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        engine = sa.create_engine(schema_url(url, name), poolclass=sa.NullPool)
        upgrade(engine)
        engine.dispose()
        yield schema_url(url, name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        admin.dispose()


@contextmanager
def sqlite_file(name: str = "bench.db", directory: str | None = None) -> Iterator[str]:
    """A SQLite URL in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="statesaga-bench-", dir=directory) as folder:
        yield f"sqlite:///{os.path.join(folder, name)}"


@contextmanager
def database(kind: str, postgres: str, prefix: str) -> Iterator[str]:
    """A fresh, migrated store URL: ``kind`` is ``sqlite`` or ``postgres``."""
    if kind == "sqlite":
        with sqlite_file() as url:
            engine = sa.create_engine(url, poolclass=sa.NullPool)
            upgrade(engine)
            engine.dispose()
            yield url
    else:
        with postgres_schema(postgres, prefix) as url:
            yield url


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` (0..1) percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    """The median, or NaN for nothing."""
    return statistics.median(values) if values else float("nan")


def environment(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Python, platform, CPU count and the versions of ``packages``."""
    versions: dict[str, str | None] = {}
    for name in ("statesaga", "sqlalchemy", "psycopg", *packages):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "packages": versions,
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table; numbers right-aligned."""
    out = Table(title=title)
    for index, column in enumerate(columns):
        out.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        out.add_row(*(_cell(value) for value in row))
    console.print(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` (with the environment) to ``path`` when one is given."""
    if path is None:
        return
    Path(path).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    console.print(f"figures written to {path}")


def trees_in_turn(
    script: str, sources: Sequence[str], processes: int, options: Sequence[str], figure: str
) -> dict[str, list[float]]:
    """Each source tree's ``figure``, from ``processes`` child processes per tree in turn.

    A child is ``script --child SOURCE *options``, which prints its figures as
    one line of JSON last; each tree's processes alternate with the others', so
    a drift in the machine's load falls on every tree alike.
    """
    trees = [str(Path(source).resolve()) for source in sources]
    figures: dict[str, list[float]] = {tree: [] for tree in trees}
    for _ in range(processes):
        for tree in trees:
            command = [sys.executable, script, "--child", tree, *options]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{tree} failed:\n{done.stderr}")
            value = json.loads(done.stdout.strip().splitlines()[-1])[figure]
            figures[tree].append(value)
            print(f"{tree}: {figure} {value:.3f}", flush=True)
    return figures
