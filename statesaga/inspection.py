"""Inspection: runs filtered by time, the numbers an operator alerts on, a saga's table.

>>> from statesaga.store.sql import SqlStore
>>> report = stats(SqlStore("sqlite://"), since=0.0)
>>> report.finished, report.failure_rate
(0, 0.0)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga.core import TERMINAL_STATUSES, ErrorInfo, Status
from statesaga.definition import Definition, StateDef, StepDef, TransitionDef
from statesaga.errors import StateSagaError
from statesaga.failures import decode
from statesaga.observability import is_failed_compensation
from statesaga.retention import _engine_of
from statesaga.retry import Retry
from statesaga.serde import loads
from statesaga.settings import parse_duration
from statesaga.store.base import Store
from statesaga.store.schema import instances

__all__ = [
    "Stats",
    "TransitionRow",
    "parse_time",
    "retry_text",
    "rollback_text",
    "seconds_text",
    "stats",
    "step_marks",
    "transition_rows",
    "trigger_text",
    "wait_text",
]

_TERMINAL = TERMINAL_STATUSES


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
        return self.counts.get(Status.FAILED.value, 0) / self.finished if self.finished else 0.0

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
                instances.c.status.in_((Status.COMPENSATED.value, Status.FAILED.value)),
                instances.c.error.is_not(None),
            )
        ).all()
    timed_out = failed_compensations = 0
    for status, raw in errors:
        error = _error(raw)
        if error is None:
            continue
        timed_out += error.kind.is_timeout
        failed_compensations += status == Status.FAILED.value and is_failed_compensation(error)
    return Stats(since, until, counts, timed_out, failed_compensations)


def _error(raw: Any) -> ErrorInfo | None:
    if isinstance(raw, str):
        raw = loads(raw)
    if not isinstance(raw, dict) or "type" not in raw:
        return None
    return decode(raw)


def seconds_text(seconds: float | None) -> str:
    """A duration as a person writes it: ``500ms``, ``30s``, ``15m``, ``2h``, ``1d``.

    >>> seconds_text(900.0), seconds_text(0.5), seconds_text(None)
    ('15m', '500ms', '')
    """
    if seconds is None:
        return ""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def retry_text(retry: Retry) -> str:
    """A retry policy in a few words.

    >>> retry_text(Retry(attempts=3, initial_interval=0.5, backoff=2, max_interval=60))
    '3 tries, 500ms x2 up to 1m'
    """
    if retry.attempts == 1:
        return "1 try"
    return (
        f"{retry.attempts} tries, {seconds_text(retry.initial_interval)} x{retry.backoff:g} "
        f"up to {seconds_text(retry.max_interval)}"
    )


def trigger_text(t: TransitionDef, definition: Definition) -> str:
    """What sets a transition off: ``auto``, ``event E [when G]``, ``timeout after 45s``..."""
    if t.event:
        return f"event {t.event}" + (f" when {t.guard_name}" if t.guard else "")
    if t.on_timeout:
        return f"timeout after {wait_text(definition.states[t.source])}"
    if t.guard:
        return f"when {t.guard_name}"
    return "auto"


def wait_text(state: StateDef) -> str:
    """A waiting state's timeout: fixed (``45s``), or the function computing each run's."""
    if state.timeout_of is not None:
        return f"{state.timeout_name}(ctx)"
    return seconds_text(state.timeout)


def rollback_text(step: StepDef) -> str:
    """A step's compensation, or a pivot's void (marked as one)."""
    if step.void is not None:
        return f"void {step.void_name}"
    return step.compensation_name or ""


def step_marks(step: StepDef) -> tuple[str, ...]:
    """A step's markers: pivot, read-only, transactional, undo on failure."""
    return tuple(
        mark
        for mark, on in (
            ("pivot", step.pivot),
            ("read-only", step.read_only),
            ("transactional", step.transactional),
            ("undo on failure", step.compensate_on_failure),
        )
        if on
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
    retry: str = ""
    timeout: str = ""
    compensation_retry: str = ""


def transition_rows(definition: Definition) -> list[TransitionRow]:
    """The saga's transitions as ``statesaga check`` prints them.

    >>> from statesaga._examples import Fulfil
    >>> row = transition_rows(Fulfil.definition)[1]
    >>> row.name, row.trigger, row.step, row.compensation
    ('reserve', 'auto', 'reserve_stock', 'release_stock')
    """
    rows = []
    for t in definition.transitions.values():
        step = t.step
        rows.append(
            TransitionRow(
                name=t.name,
                source=t.source,
                target=t.target,
                trigger=trigger_text(t, definition),
                step=step.function_name if step else "",
                compensation=rollback_text(step) if step else "",
                marks=step_marks(step) if step else (),
                retry=retry_text(step.retry) if step else "",
                timeout=seconds_text(step.timeout) if step else "",
                compensation_retry=retry_text(step.compensation_retry)
                if step and step.rollback
                else "",
            )
        )
    return rows
