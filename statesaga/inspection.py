"""Inspection: runs filtered by time, the numbers an operator alerts on, a saga's table.

>>> from statesaga.store.sql import SqlStore
>>> report = stats(SqlStore("sqlite://"), since=0.0)
>>> report.finished, report.failure_rate
(0, 0.0)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga.core import ErrorInfo
from statesaga.definition import Definition
from statesaga.errors import StateSagaError
from statesaga.observability import TIMEOUT_ERRORS, is_failed_compensation
from statesaga.retention import _engine_of
from statesaga.settings import parse_duration
from statesaga.store.base import Store
from statesaga.store.schema import instances

__all__ = ["Stats", "TransitionRow", "parse_time", "stats", "transition_rows"]

_TERMINAL = ("completed", "compensated", "failed")


def parse_time(value: str, *, now: float | None = None) -> float:
    """Epoch seconds from an ISO 8601 time (UTC unless it says otherwise) or an age (``2h``).

    >>> parse_time("2h", now=10_000.0), parse_time("1970-01-01T01:00:00")
    (2800.0, 3600.0)
    """
    try:
        return (time.time() if now is None else now) - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise StateSagaError(
            f"{value!r} is not a time: pass an ISO 8601 time (2026-11-26T09:00:00) or an "
            "age such as 30m, 2h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@attrs.frozen
class Stats:
    """Runs whose last transition fell in [since, until): counts and alert rates.

    ``failure_rate`` and ``timeout_rate`` are fractions of the finished runs
    (completed, compensated or failed) in the window.
    """

    since: float
    until: float
    counts: dict[str, int]
    timed_out: int
    failed_compensations: int

    @property
    def finished(self) -> int:
        """Runs that ended in the window."""
        return sum(self.counts.get(status, 0) for status in _TERMINAL)

    @property
    def failure_rate(self) -> float:
        """Failed runs over finished runs (0.0 when none finished)."""
        return self.counts.get("failed", 0) / self.finished if self.finished else 0.0

    @property
    def timeout_rate(self) -> float:
        """Runs ended by a deadline or timeout over finished runs."""
        return self.timed_out / self.finished if self.finished else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for ``--json``."""
        return {
            "since": self.since,
            "until": self.until,
            "counts": dict(self.counts),
            "finished": self.finished,
            "failure_rate": self.failure_rate,
            "timeout_rate": self.timeout_rate,
            "timed_out": self.timed_out,
            "failed_compensations": self.failed_compensations,
        }


def stats(
    store: Store,
    *,
    since: float,
    until: float | None = None,
    saga: str | None = None,
) -> Stats:
    """Counts per status and alert numbers for runs whose last transition is in the window."""
    until = time.time() if until is None else until
    window = sa.and_(instances.c.updated_at >= since, instances.c.updated_at < until)
    if saga is not None:
        window = sa.and_(window, instances.c.saga == saga)
    engine = _engine_of(store)
    with engine.connect() as connection:
        counts = {
            status: int(count)
            for status, count in connection.execute(
                sa.select(instances.c.status, sa.func.count())
                .where(window)
                .group_by(instances.c.status)
            )
        }
        errors = connection.execute(
            sa.select(instances.c.status, instances.c.error).where(
                window,
                instances.c.status.in_(("compensated", "failed")),
                instances.c.error.is_not(None),
            )
        ).all()
    timed_out = failed_compensations = 0
    for status, raw in errors:
        error = _error(raw)
        if error is None:
            continue
        timed_out += error.type in TIMEOUT_ERRORS
        failed_compensations += status == "failed" and is_failed_compensation(error)
    return Stats(since, until, counts, timed_out, failed_compensations)


def _error(raw: Any) -> ErrorInfo | None:
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict) or "type" not in raw:
        return None
    return ErrorInfo(
        str(raw["type"]),
        str(raw.get("message", "")),
        bool(raw.get("retryable", True)),
        raw.get("step"),
    )


@attrs.frozen
class TransitionRow:
    """One line of a saga's check table: a transition, what triggers it, what it runs."""

    name: str
    source: str
    target: str
    trigger: str
    step: str
    compensation: str
    marks: tuple[str, ...]


def transition_rows(definition: Definition) -> list[TransitionRow]:
    """The saga's transitions as ``statesaga check`` prints them.

    >>> from definitions.checkout.saga import CompleteCart
    >>> row = transition_rows(CompleteCart.definition)[1]
    >>> row.name, row.trigger, row.step, row.compensation
    ('reserve', 'auto', 'reserve_inventory', 'release_inventory')
    """
    rows = []
    for t in definition.transitions.values():
        if t.event:
            trigger = f"event {t.event}" + (f" when {t.guard_name}" if t.guard else "")
        elif t.on_timeout:
            trigger = "timeout"
        elif t.guard:
            trigger = f"when {t.guard_name}"
        else:
            trigger = "auto"
        marks: tuple[str, ...] = ()
        if t.step is not None:
            marks = tuple(
                mark
                for mark, on in (
                    ("pivot", t.step.pivot),
                    ("read-only", t.step.read_only),
                    ("transactional", t.step.transactional),
                )
                if on
            )
        rows.append(
            TransitionRow(
                name=t.name,
                source=t.source,
                target=t.target,
                trigger=trigger,
                step=t.step.function_name if t.step else "",
                compensation=(t.step.rollback_name or "") if t.step else "",
                marks=marks,
            )
        )
    return rows
