"""Retry policies for steps and compensations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from statesaga.errors import DefinitionError, NonRetryableError

__all__ = ["Retry", "seconds"]


def seconds(value: float | timedelta) -> float:
    """Normalise a duration given as seconds or a ``timedelta`` to float seconds.

    >>> seconds(timedelta(minutes=1)), seconds(2)
    (60.0, 2.0)
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(
            f"expected a duration in seconds or a timedelta, got {value!r}; "
            "pass e.g. timedelta(seconds=5) or 5.0"
        )
    return float(value)


def _positive(name: str) -> Callable[[Any, attrs.Attribute[float], float], None]:
    def check(_: object, __: attrs.Attribute[float], value: float) -> None:
        if not value > 0:
            raise DefinitionError(f"Retry({name}={value!r}) must be positive; use a value > 0")

    return check


def _non_negative_fraction(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise DefinitionError(f"Retry(jitter={value!r}) must be between 0 and 1 (a fraction)")


def _at_least_one(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(
            f"Retry(attempts={value!r}) must be a whole number >= 1 (1 means no retries)"
        )


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise DefinitionError(f"Retry(non_retryable=...) takes exception classes, got {item!r}")
    return tuple(items)


@attrs.frozen
class Retry:
    """How often, and how far apart, a failing step or compensation is tried.

    Args:
        attempts: total tries including the first (``1`` means no retry).
        initial_interval: delay before the second try, in seconds or a ``timedelta``.
        backoff: factor the delay grows by after each try.
        max_interval: the delay never exceeds this.
        jitter: the delay is spread by up to this fraction either way, so
            that many instances failing together do not retry in lockstep.
        non_retryable: exception types that fail at once, without retries
            (``NonRetryableError`` and its subclasses always do, and so do a
            database's ``ProgrammingError``, e.g. a table or column that does not
            exist or an SQL syntax error (SQLite's ``OperationalError`` for
            these), its ``DataError``, e.g. text where a number goes, and its
            ``NotSupportedError``: trying again cannot succeed).

    >>> policy = Retry(attempts=4, initial_interval=0.5, backoff=2, jitter=0)
    >>> [policy.delay(n, 0.5) for n in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    >>> policy.exhausted(4)
    True
    """

    attempts: int = attrs.field(default=3, validator=_at_least_one)
    initial_interval: float = attrs.field(
        default=1.0, converter=seconds, validator=_positive("initial_interval")
    )
    backoff: float = attrs.field(default=2.0, converter=float)
    max_interval: float = attrs.field(
        default=60.0, converter=seconds, validator=_positive("max_interval")
    )
    jitter: float = attrs.field(default=0.1, converter=float, validator=_non_negative_fraction)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_exception_types
    )

    def __attrs_post_init__(self) -> None:
        if self.backoff < 1:
            raise DefinitionError(
                f"Retry(backoff={self.backoff!r}) must be >= 1 (1 keeps the delay constant)"
            )

    def exhausted(self, attempt: int) -> bool:
        """Whether try number ``attempt`` (1-based) was the last one allowed."""
        return attempt >= self.attempts

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed try ``attempt``; ``rand`` is uniform in [0, 1)."""
        base = min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)
        return min(max(0.0, base * (1 + self.jitter * (2 * rand - 1))), self.max_interval)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried under this policy.

        >>> import sqlite3
        >>> Retry().is_retryable(ConnectionError("reset")), Retry().is_retryable(
        ...     sqlite3.ProgrammingError("no such cursor"))
        (True, False)
        """
        if isinstance(error, (NonRetryableError, *self.non_retryable)):
            return False
        return not _programming_error(error)


#: DBAPI (PEP 249) errors that the same statement meets again on every try: the statement
#: is wrong (a table that does not exist, a syntax error), the data it was given is
#: (a value out of range, text where a number goes), or the database cannot do it
_DETERMINISTIC = frozenset({"ProgrammingError", "DataError", "NotSupportedError"})


#: SQLite's result code for an error in the SQL itself (``no such table``, a syntax
#: error), which its driver reports as an ``OperationalError``; its extended code
#: ``SQLITE_ERROR_RETRY`` (513) asks for a retry
_SQLITE_ERROR, _SQLITE_ERROR_RETRY = 1, 513


def _programming_error(error: BaseException) -> bool:
    """A DBAPI (PEP 249) or SQLAlchemy error that trying again cannot fix.

    SQLAlchemy's wrappers (``sqlalchemy.exc.ProgrammingError``) and the drivers'
    own classes (psycopg's ``UndefinedTable``) share these names. SQLite reports
    a missing table as an ``OperationalError``: its result code tells.

    >>> import sqlite3
    >>> missing = sqlite3.OperationalError("no such table: tickets")
    >>> missing.sqlite_errorcode = 1
    >>> _programming_error(missing)
    True
    """
    if any(kind.__name__ in _DETERMINISTIC for kind in type(error).__mro__):
        return True
    code = getattr(getattr(error, "orig", None) or error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_ERROR and code != _SQLITE_ERROR_RETRY


DEFAULT_STEP_RETRY = Retry()
DEFAULT_COMPENSATION_RETRY = Retry(attempts=5)
