"""Where the web view reads from: an engine opened on first use, and what it shows of runs.

The view opens its engine lazily, so that a database that cannot be opened is a
page that says so (and the next request tries again), never a server that does
not start. Everything shown of a run comes from the engine and its store's read
methods; nothing here writes, except :meth:`Source.act` (retry, cancel).

>>> redact("postgresql+psycopg://shop:s3cret@db.internal/shop")
'postgresql+psycopg://shop:***@db.internal/shop'
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga.core import ErrorInfo, Status, parent_of
from statesaga.definition import Definition
from statesaga.engine import Engine
from statesaga.errors import CancelNotAllowed, StateSagaError
from statesaga.failures import decode
from statesaga.run import DeliveryStatus, HistoryEntry, InboxEntry, Run
from statesaga.runtime.codec import inbox_entry_of
from statesaga.store.base import InstanceRow
from statesaga.ui.text import ago, span

__all__ = ["DatabaseUnavailable", "RunView", "Source", "redact", "run_view"]

#: a run whose due time passed this long ago and that nobody holds is flagged stuck
OVERDUE_GRACE = 60.0


class DatabaseUnavailable(StateSagaError):
    """The store cannot be opened or read; the message is safe to show (no password)."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show only its scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "(unreadable URL)"


@attrs.frozen
class RunView:
    """A run as the pages show it: the stored row, and why it may be stuck."""

    row: InstanceRow
    stuck: tuple[str, ...]

    @property
    def status(self) -> str:
        """The run's status (``running``, ``failed``...)."""
        return self.row.status

    @property
    def error(self) -> ErrorInfo | None:
        """The run's error, if it has one."""
        raw = self.row.error
        if not isinstance(raw, dict) or "type" not in raw:
            return None
        return decode(raw)

    @property
    def is_open(self) -> bool:
        """Not finished yet: the page refreshes itself while this holds."""
        return not Status(self.row.status).is_terminal


def stuck_reasons(row: InstanceRow, now: float) -> tuple[str, ...]:
    """Why an operator should look at this run (none for a healthy one).

    >>> row = InstanceRow(
    ...     "r1", "s", 1, "h", None, None, "c", "reserved", "running", {}, {}, None, {}, None,
    ...     1, 3, 2, "host:12:ab", 90.0, None, 80.0, 0.0, 50.0)
    >>> stuck_reasons(row, now=100.0)
    ('open past its deadline (20s ago)', 'leased by host:12:ab, whose lease expired 10s ago')
    """
    status = Status(row.status)
    reasons = []
    if status is Status.FAILED:
        reasons.append("failed: needs a person (retry it, or fix what it reports)")
    if status.is_terminal:
        return tuple(reasons)
    pivoted = bool((row.machine or {}).get("pivoted"))
    # compensating past the deadline is what a deadline does; past the pivot it no longer applies
    past_deadline = row.deadline is not None and row.deadline < now
    if past_deadline and not pivoted and status is not Status.COMPENSATING:
        reasons.append(f"open past its deadline ({ago(now - (row.deadline or now))})")
    if row.lease_owner is not None and row.lease_expires_at is not None:
        if row.lease_expires_at < now:
            expired = ago(now - row.lease_expires_at)
            reasons.append(f"leased by {row.lease_owner}, whose lease expired {expired}")
    elif row.due_at is not None and row.due_at < now - OVERDUE_GRACE:
        reasons.append(f"due {ago(now - row.due_at)} and nobody took it (is a worker running?)")
    return tuple(reasons)


def run_view(row: InstanceRow, now: float) -> RunView:
    """The row with its stuck flags."""
    return RunView(row, stuck_reasons(row, now))


@attrs.frozen
class Step:
    """One line of a run's timeline."""

    number: int
    entry: HistoryEntry
    offset: str
    duration: str


def timeline(run: Run) -> list[Step]:
    """The run's history with each entry's time since the start and its duration."""
    return [
        Step(number, entry, span(entry.finished_at - run.created_at), span(entry.duration))
        for number, entry in enumerate(run.history, 1)
    ]


class Source:
    """The engine the view reads through, opened on first use and closed with the app.

    Args:
        database: a SQLAlchemy URL, or an ``Engine`` the application already has
            (which the view uses and never closes).
        sagas: saga classes (or definitions) to register: their diagrams and tables
            are shown, and their runs can be retried or cancelled.
        resources: what the steps need (``ctx.resource``) when a run is retried or
            cancelled from the view; given to the engine the view opens.
    """

    def __init__(
        self,
        database: str | Engine,
        *,
        sagas: Iterable[type | Definition] = (),
        resources: Iterable[object] = (),
    ) -> None:
        self._sagas = list(sagas)
        self._resources = list(resources)
        self._lock = threading.Lock()
        if isinstance(database, Engine):
            self._engine: Engine | None = database
            self._owned = False
            database.register(*self._sagas)
            url = getattr(getattr(database.store, "engine", None), "url", None)
            self.url = "(the application's engine)" if url is None else redact(str(url))
        else:
            self._engine = None
            self._owned = True
            self._database = database
            self.url = redact(database)

    @property
    def engine(self) -> Engine:
        """The engine, opened now if it is not yet; ``DatabaseUnavailable`` if it cannot be."""
        with self._lock:
            if self._engine is None:
                self._engine = self._open()
            return self._engine

    def _open(self) -> Engine:
        url = self._database
        try:
            parsed = sa.make_url(url)
        except Exception:
            raise DatabaseUnavailable(
                f"{self.url} is not a SQLAlchemy URL; pass e.g. --db sqlite:///statesaga.db"
            ) from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(str(parsed.database))
            if not path.is_file():
                # opening would create an empty database: a view must not do that
                raise DatabaseUnavailable(
                    f"there is no database file at {path}; pass the --db your application "
                    "writes to (the view never creates one)"
                )
        try:
            return Engine.from_settings(
                database_url=url, sagas=self._sagas, resources=self._resources
            )
        except Exception as error:
            raise DatabaseUnavailable(
                f"cannot open the database at {self.url}: {_first_line(error, parsed.password)}"
            ) from None

    def failure(self, error: Exception) -> DatabaseUnavailable:
        """A read that failed, as a message safe to show."""
        password = None
        if self._owned:
            try:
                password = sa.make_url(self._database).password
            except Exception:
                password = None
        return DatabaseUnavailable(
            f"cannot read the database at {self.url}: {_first_line(error, password)}"
        )

    @property
    def definitions(self) -> list[Definition]:
        """Every registered definition, by name then version."""
        return sorted(self.engine.definitions, key=lambda d: (d.name, d.version))

    def definition(self, name: str, version: int | None = None) -> Definition | None:
        """The registered definition (its newest version when ``version`` is ``None``)."""
        found = [d for d in self.definitions if d.name == name]
        if version is not None:
            found = [d for d in found if d.version == version]
        return found[-1] if found else None

    def run(self, instance_id: str) -> tuple[RunView, Run] | None:
        """The run (its row and, with its history, as a ``Run``), or ``None``."""
        store = self.engine.store
        row = store.get(instance_id)
        if row is None:
            return None
        history = self.engine.history(instance_id)
        inbox = tuple(inbox_entry_of(e) for e in store.inbox(instance_id))
        return run_view(row, self.engine.clock()), _as_run(row, history, inbox)

    def children(self, run: Run) -> list[Run]:
        """The child runs of ``run``'s child steps, oldest first (they share its correlation id)."""
        family = self.engine.store.list(correlation_id=run.correlation_id, limit=10_000)
        return [
            _as_run(kin, ())
            for kin in reversed(family)
            if (parent := parent_of(kin.idempotency_key)) is not None and parent[0] == run.id
        ]

    def page(self, *, limit: int, **filters: Any) -> list[RunView]:
        """One page of runs, newest first (see ``SqlStore.list_page``)."""
        now = self.engine.clock()
        return [run_view(row, now) for row in self.engine.store.list_page(limit=limit, **filters)]

    def counts(self, saga: str | None = None) -> dict[tuple[str, int, str], int]:
        """Runs per (saga, version, status)."""
        return self.engine.store.count_by_status(saga)

    def act(self, action: str, instance_id: str, note: str, outcome: str = "") -> Run:
        """Retry, cancel or resolve a run through the engine (which records it in the history).

        A resolve needs ``outcome`` (compensated or completed) and a ``note``; it
        is recorded as done in the web view.
        """
        if action == "retry":
            return self.engine.retry(instance_id)
        if action == "resolve":
            return self.engine.resolve(instance_id, outcome=outcome, note=note, by="the web view")
        reason = f"cancelled in the web view: {note}" if note else "cancelled in the web view"
        delivery = self.engine.cancel(instance_id, reason=reason)
        if delivery.status is DeliveryStatus.REJECTED:
            raise CancelNotAllowed(
                f"run {instance_id} cannot be cancelled: {delivery.reason}",
                instance_id=instance_id,
            )
        return delivery.run

    def close(self) -> None:
        """Close the engine if the view opened it."""
        with self._lock:
            if self._owned and self._engine is not None:
                self._engine.close()
                self._engine = None


def _as_run(
    row: InstanceRow, history: Sequence[HistoryEntry], inbox: tuple[InboxEntry, ...] = ()
) -> Run:
    """The run as stored (input, context and output left as JSON data)."""
    error = RunView(row, ()).error
    return Run(
        id=row.id,
        saga=row.saga,
        version=row.saga_version,
        status=Status(row.status),
        state=row.state,
        key=row.entity_key,
        correlation_id=row.correlation_id,
        input=row.input,
        data=row.context,
        output=row.output,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=tuple(history),
        inbox=inbox,
        parent_id=None if (parent := parent_of(row.idempotency_key)) is None else parent[0],
    )


def _first_line(error: BaseException, password: str | None) -> str:
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
    if password:
        line = line.replace(password, "***")
    return line
