"""``Settings``: one typed configuration, from arguments, environment and TOML.

Each field is read, first found wins, from:

1. an explicit argument (``Settings.load(database_url=...)``, ``--db``);
2. the environment variable ``STATESAGA_<FIELD>`` (``STATESAGA_DATABASE_URL``);
3. ``statesaga.toml`` in the current directory (top-level keys), else the
   ``[tool.statesaga]`` table of ``pyproject.toml`` there;
4. the default.

A value that does not fit fails at once with a ``SettingsError`` naming the
key, where it came from and the expected form.

>>> settings = Settings.load(environ={}, cwd="/nonexistent", lease_duration="45s")
>>> settings.lease_duration, settings.database_url
(45.0, 'sqlite:///statesaga.db')
>>> try:  # doctest: +ELLIPSIS
...     Settings.load(environ={"STATESAGA_WORKER_CONCURRENCY": "many"}, cwd="/nonexistent")
... except SettingsError as error:
...     print(error)
worker_concurrency='many' (from STATESAGA_WORKER_CONCURRENCY) is not valid: expected a whole ...
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from statesaga.errors import SettingsError
from statesaga.retry import Retry

if TYPE_CHECKING:
    from statesaga.store.sql import SqlStore

__all__ = ["ENV_PREFIX", "Settings", "parse_duration"]

#: environment variables are this prefix plus the field name in capitals
ENV_PREFIX = "STATESAGA_"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_duration(value: object) -> float:
    """Seconds from a number, or a string such as ``"90"``, ``"30s"``, ``"15m"`` or ``"30d"``.

    >>> parse_duration("15m"), parse_duration(2.5), parse_duration("30d")
    (900.0, 2.5, 2592000.0)
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ValueError(value)
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds > 0:
        raise ValueError(value)
    return seconds


def _url(schemes: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip()
        if not text.startswith(schemes):
            raise ValueError(value)
        return text

    return parse


def _whole(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        number = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
        if number < minimum:
            raise ValueError(value)
        return number

    return parse


def _factor(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(str(value).strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if number < 1:
        raise ValueError(value)
    return number


def _identifier(value: object) -> str:
    text = str(value).strip()
    if not _IDENTIFIER.fullmatch(text):
        raise ValueError(value)
    return text


def _identifiers(value: object) -> tuple[str, ...]:
    """Names from ``"public, shop"`` or a TOML list; empty for none."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        _identifier(name)
    return names


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    def parse_or_none(value: object) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return parse(value)

    return parse_or_none


@attrs.frozen
class _Field:
    parse: Callable[[object], Any]
    expected: str
    help: str


_FIELDS: dict[str, _Field] = {
    "database_url": _Field(
        _url(("sqlite:", "postgresql")),
        "a SQLAlchemy URL, e.g. sqlite:///statesaga.db or postgresql+psycopg://user@host/db",
        "the store",
    ),
    "redis_url": _Field(
        _optional(_url(("redis://", "rediss://", "unix://"))),
        "a Redis URL, e.g. redis://localhost:6379/0 (or empty for none)",
        "entity locks in Redis (none: the store's own leases)",
    ),
    "default_deadline": _Field(
        _optional(parse_duration),
        "a positive duration, e.g. 900, 15m or 2h (or empty for none)",
        "deadline of runs whose saga and start() name none",
    ),
    "lease_duration": _Field(
        parse_duration, "a positive duration, e.g. 30 or 30s", "how long a lease lasts"
    ),
    "retry_attempts": _Field(
        _whole(1), "a whole number >= 1, e.g. 3", "default retry policy: tries in all"
    ),
    "retry_initial_interval": _Field(
        parse_duration, "a positive duration, e.g. 1s", "default retry policy: first delay"
    ),
    "retry_backoff": _Field(
        _factor, "a number >= 1, e.g. 2", "default retry policy: delay growth factor"
    ),
    "retry_max_interval": _Field(
        parse_duration, "a positive duration, e.g. 60s", "default retry policy: longest delay"
    ),
    "retention_days": _Field(
        _optional(_whole(1)),
        "a whole number of days >= 1 (or empty to keep everything)",
        "finished runs older than this are deleted by the worker",
    ),
    "worker_concurrency": _Field(
        _whole(1), "a whole number >= 1, e.g. 4", "threads of `statesaga worker`"
    ),
    "pool_size": _Field(
        _whole(1),
        "a whole number >= 1, e.g. 5",
        "connections SQLAlchemy's pool keeps open (reads, claims, steps)",
    ),
    "max_overflow": _Field(
        _whole(0),
        "a whole number >= 0, e.g. 0",
        "connections the pool may open beyond pool_size when busy",
    ),
    "hot_connections": _Field(
        _whole(1),
        "a whole number >= 1, e.g. 5",
        "connections of the transition hot path (a process holds at most "
        "pool_size + max_overflow + hot_connections)",
    ),
    "max_payload_bytes": _Field(
        _optional(_whole(1)),
        "a whole number of bytes >= 1, e.g. 2097152 (or empty for no limit)",
        "largest JSON a run's input, context, output or an event payload may take",
    ),
    "max_in_flight": _Field(
        _optional(_whole(1)),
        "a whole number >= 1, e.g. 100000 (or empty for no bound)",
        "most runs an engine holds at once; beyond it new work is refused",
    ),
    "schema": _Field(
        _optional(_identifier),
        "a plain identifier, e.g. sagas (PostgreSQL only; empty for the default)",
        "the PostgreSQL schema holding the tables",
    ),
    "app_schemas": _Field(
        _identifiers,
        "plain identifiers separated by commas, e.g. public,shop (or empty for none)",
        "PostgreSQL with a schema: the schemas after it on the search_path, where "
        "transactional steps find the application's tables",
    ),
}


@attrs.frozen
class Settings:
    """statesaga's configuration; build it with :meth:`load` (or directly, all defaulted).

    Durations are seconds. ``sources`` says where each value came from
    (``default``, ``argument``, ``STATESAGA_...``, ``statesaga.toml`` or
    ``pyproject.toml``).
    """

    database_url: str = "sqlite:///statesaga.db"
    redis_url: str | None = None
    default_deadline: float | None = None
    lease_duration: float = 30.0
    retry_attempts: int = 3
    retry_initial_interval: float = 1.0
    retry_backoff: float = 2.0
    retry_max_interval: float = 60.0
    retention_days: int | None = None
    worker_concurrency: int = 1
    schema: str | None = None
    app_schemas: tuple[str, ...] = ("public",)
    pool_size: int = 5
    max_overflow: int = 0
    hot_connections: int = 5
    max_payload_bytes: int | None = 2 * 1024 * 1024
    max_in_flight: int | None = 100_000
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        **arguments: Any,
    ) -> Settings:
        """The effective settings: ``arguments`` over environment over TOML over defaults.

        Arguments that are ``None`` are ignored, so CLI options can be passed as they are.
        """
        unknown = sorted(set(arguments) - set(_FIELDS))
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}"
            )
        environ = os.environ if environ is None else environ
        layers: list[tuple[str, Mapping[str, Any]]] = []
        file_source, file_values = _read_files(Path.cwd() if cwd is None else Path(cwd))
        if file_source is not None:
            layers.append((file_source, file_values))
        env_values = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in _FIELDS
            if ENV_PREFIX + name.upper() in environ
        }
        layers.append(("env", env_values))
        layers.append(("argument", {k: v for k, v in arguments.items() if v is not None}))
        values: dict[str, Any] = {}
        sources: dict[str, str] = dict.fromkeys(_FIELDS, "default")
        for source, layer in layers:
            for key, raw in layer.items():
                name = key.replace("-", "_")
                where = ENV_PREFIX + name.upper() if source == "env" else source
                values[name] = _parse(name, raw, where)
                sources[name] = where
        return cls(**values, sources=sources)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (validated like arguments); ``None`` values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}")
        parsed = {name: _parse(name, raw, "argument") for name, raw in changes.items()}
        sources = {**self.sources, **dict.fromkeys(parsed, "argument")}
        return attrs.evolve(self, **parsed, sources=sources)

    @property
    def retry(self) -> Retry:
        """The default retry policy as a :class:`~statesaga.Retry`, for ``.run(retry=...)``."""
        return Retry(
            attempts=self.retry_attempts,
            initial_interval=self.retry_initial_interval,
            backoff=self.retry_backoff,
            max_interval=self.retry_max_interval,
        )

    def rows(self) -> list[tuple[str, Any, str]]:
        """(name, value, source) for every setting, in declaration order."""
        return [(name, getattr(self, name), self.sources.get(name, "default")) for name in _FIELDS]

    def store(self) -> SqlStore:
        """The store these settings name: its database, schema and connection bounds."""
        from statesaga.store.sql import SqlStore

        return SqlStore(
            self.database_url,
            schema=self.schema,
            app_schemas=self.app_schemas,
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            hot_connections=self.hot_connections,
        )

    def engine_arguments(self) -> dict[str, Any]:
        """Keyword arguments for an engine: the store (with its schema), locks, lease, deadline."""
        return {
            "database": self.store(),
            "lease_ttl": self.lease_duration,
            "default_deadline": self.default_deadline,
            "default_retry": self.retry,
            "max_payload_bytes": self.max_payload_bytes,
            "max_in_flight": self.max_in_flight,
        }


def describe() -> list[tuple[str, str, str]]:
    """(name, environment variable, expected form) of every setting, for the docs."""
    return [(name, ENV_PREFIX + name.upper(), field.expected) for name, field in _FIELDS.items()]


def _parse(name: str, raw: object, source: str) -> Any:
    field = _FIELDS.get(name)
    if field is None:
        raise SettingsError(
            f"unknown setting {name!r} in {source}; known: {', '.join(_FIELDS)}", setting=name
        )
    try:
        return field.parse(raw)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(
            f"{name}={raw!r} (from {source}) is not valid: expected {field.expected}", setting=name
        ) from None


def _read_files(directory: Path) -> tuple[str | None, Mapping[str, Any]]:
    """The settings table of ``statesaga.toml``, else of ``pyproject.toml`` [tool.statesaga]."""
    own = directory / "statesaga.toml"
    if own.is_file():
        return "statesaga.toml", _load_toml(own)
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        table = _load_toml(pyproject).get("tool", {}).get("statesaga")
        if table is not None:
            if not isinstance(table, dict):
                raise SettingsError("[tool.statesaga] in pyproject.toml must be a table")
            return "pyproject.toml", table
    return None, {}


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path.name} is not valid TOML: {error}") from None
