"""Fault injection for the checkout tests: failing SQL statements and a failing provider.

The checkout's database steps write through the transition's own SQLAlchemy
connection, so a statement that fails is a step (or compensation) that fails
partway, inside its transaction. :class:`FailingStatements` makes the next
statements that match a pattern such as ``"INSERT INTO shop_orders"`` raise,
from a ``before_cursor_execute`` listener on the shop's database engine. The
steps are addressed by the first statement of theirs that touches a table:

==================  ===================================  ================================
step                statement                            what already ran in its tx
==================  ===================================  ================================
validate            ``SELECT FROM shop_inventory``       reading the cart
reserve             ``INSERT INTO shop_reservations``    every stock UPDATE (flushed last)
approved / paid     ``INSERT INTO shop_payments``        nothing
order               ``INSERT INTO shop_orders``          nothing
complete            ``UPDATE shop_carts``                reading the cart
reserve.undo        ``UPDATE shop_reservations``         giving the stock back
approved.undo       ``UPDATE shop_payments``             reading the payment
order.undo          ``UPDATE shop_orders``               reading the order
==================  ===================================  ================================

:class:`FaultyProvider` is a :class:`SimulatedProvider` whose next calls fail
before reaching it, or after it did the work (the answer is lost).

:class:`Crash` escapes every ``except Exception``, as a process dying there
would: nothing more is persisted, the run's lease is left to expire.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import sqlalchemy as sa

from definitions.checkout.provider import Authorization, PaymentRequest, SimulatedProvider
from statesaga import NonRetryableError

__all__ = [
    "Crash",
    "FailingStatements",
    "FaultyProvider",
    "InjectedFault",
    "InjectedOutage",
    "statement_pattern",
]


class InjectedFault(NonRetryableError):
    """A failure no retry can fix: the saga compensates at once."""


class InjectedOutage(Exception):
    """A transient failure (a dropped connection, a 503): the step or compensation retries."""


class Crash(BaseException):
    """The process dies here: like SIGKILL, it escapes every ``except Exception``."""


def statement_pattern(spec: str) -> re.Pattern[str]:
    """A regex for ``"INSERT INTO t"``, ``"UPDATE t"``, ``"DELETE FROM t"`` or ``"SELECT FROM t"``.

    >>> bool(statement_pattern("SELECT FROM shop_inventory").match(
    ...     "SELECT shop_inventory.sku FROM shop_inventory WHERE shop_inventory.sku IN (?)"))
    True
    >>> bool(statement_pattern("UPDATE shop_carts").match("UPDATE shop_cart_lines SET x=?"))
    False
    """
    verb, *_, table = spec.split()
    if verb.upper() == "SELECT":
        return re.compile(rf"\s*SELECT\b.*?\bFROM {re.escape(table)}\b", re.IGNORECASE | re.DOTALL)
    head = " ".join(spec.split()[:-1])
    return re.compile(rf"\s*{re.escape(head)} {re.escape(table)}\b", re.IGNORECASE)


@attrs.define
class _Armed:
    pattern: re.Pattern[str]
    error: BaseException
    times: int


class FailingStatements:
    """Make the shop's SQL statements fail, from inside the transaction that runs them.

    >>> engine = sa.create_engine("sqlite://")
    >>> faults = FailingStatements(engine)
    >>> with faults.fail("SELECT FROM t", InjectedFault("no")), engine.connect() as c:
    ...     c.exec_driver_sql("SELECT 1 FROM t")
    Traceback (most recent call last):
    ...
    checkout_faults.InjectedFault: no
    >>> faults.hits
    ['SELECT FROM t']
    >>> faults.close(); engine.dispose()
    """

    def __init__(self, database: sa.Engine) -> None:
        self.database = database
        self.hits: list[str] = []
        self.statements: list[str] = []  # every statement run on the database, failed or not
        self._armed: dict[str, _Armed] = {}
        self._lock = threading.Lock()
        sa.event.listen(database, "before_cursor_execute", self._before)

    @contextmanager
    def fail(self, spec: str, error: BaseException, *, times: int = 1) -> Iterator[None]:
        """While the block runs, the next ``times`` statements matching ``spec`` raise ``error``."""
        with self._lock:
            self._armed[spec] = _Armed(statement_pattern(spec), error, times)
        try:
            yield
        finally:
            with self._lock:
                self._armed.pop(spec, None)

    def count(self, spec: str) -> int:
        """How many statements matching ``spec`` were run (or tried) so far."""
        pattern = statement_pattern(spec)
        return sum(1 for statement in self.statements if pattern.match(statement))

    def close(self) -> None:
        sa.event.remove(self.database, "before_cursor_execute", self._before)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self._lock:
            self.statements.append(statement)
            for spec, armed in self._armed.items():
                if armed.times > 0 and armed.pattern.match(statement):
                    armed.times -= 1
                    self.hits.append(spec)
                    error = armed.error
                    break
            else:
                return
        raise error


@attrs.define
class _ProviderFault:
    error: BaseException
    after: bool  # the provider did the work; the answer is what is lost


class FaultyProvider(SimulatedProvider):
    """A simulated provider whose next calls fail as the test says.

    A call that fails ``before`` never reaches the provider (nothing in ``calls``);
    one that fails ``after`` was done and recorded, and only its answer is lost.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._faults: dict[str, list[_ProviderFault]] = {"authorize": [], "cancel": []}

    def fail_next(
        self, operation: str, error: BaseException, *, times: int = 1, after: bool = False
    ) -> None:
        """The next ``times`` calls of ``operation`` (``authorize``/``cancel``) raise ``error``."""
        self._faults[operation].extend(_ProviderFault(error, after) for _ in range(times))

    def _take(self, operation: str) -> _ProviderFault | None:
        with self._lock:
            faults = self._faults[operation]
            return faults.pop(0) if faults else None

    def authorize(self, request: PaymentRequest) -> Authorization:
        fault = self._take("authorize")
        if fault is not None and not fault.after:
            raise fault.error
        authorization = super().authorize(request)
        if fault is not None:
            raise fault.error
        return authorization

    def cancel(self, idempotency_key: str) -> Authorization | None:
        fault = self._take("cancel")
        if fault is not None and not fault.after:
            raise fault.error
        authorization = super().cancel(idempotency_key)
        if fault is not None:
            raise fault.error
        return authorization
