"""What a plan's run yields, and the pieces the driver plays with: the fake clock,
the injected failures and crash, the journal of calls.

>>> clock = FakeClock(100.0)
>>> clock.advance(5); clock()
105.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from statesaga.definition import Definition
from statesaga.errors import NonRetryableError
from statesaga.run import Run
from statesaga.testing.plans import FaultPlan

__all__ = [
    "BRANCH_JOIN_SECONDS",
    "LEASE_TTL",
    "MAX_ROUNDS",
    "OPERATOR_RETRIES",
    "SETTLE_PASSES",
    "SETTLE_PAUSE",
    "Crash",
    "FakeClock",
    "InjectedFailure",
    "InjectedFatalFailure",
    "JournalEntry",
    "Outcome",
]

#: the lease engines take in the driver, in fake seconds
LEASE_TTL = 30.0
#: how many times the driver lets an operator retry a ``failed`` run (plus one per fault)
OPERATOR_RETRIES = 3
#: a bound on the driver's rounds (recoveries, events), so a runaway run ends the test
MAX_ROUNDS = 200
#: how long (real seconds) the driver waits for one of the engines' branch threads
BRANCH_JOIN_SECONDS = 10.0
#: the driver's last recovery passes, while an ended run still has an entry pending
SETTLE_PASSES = 20
#: seconds (real time) between two of those passes: for another thread to let the run go
SETTLE_PAUSE = 0.01


class Crash(BaseException):
    """The process dies here: like SIGKILL, it escapes every ``except Exception``."""


class InjectedFailure(Exception):
    """A retryable failure injected by a fault plan."""


class InjectedFatalFailure(NonRetryableError):
    """A non-retryable failure injected by a fault plan."""


class FakeClock:
    """A clock that only moves when told: ``clock()`` is the time, ``advance`` moves it.

    >>> clock = FakeClock(100.0)
    >>> clock.advance(5)
    >>> clock()
    105.0

    :meth:`running` makes one that also runs with a real clock (``time.time``
    by default), for tests where other threads or processes must see time pass
    (a lease lapsing, a lock waited for) while the test still jumps it forward:

    >>> wall = FakeClock(500.0)  # stands in for time.time in this example
    >>> clock = FakeClock.running(wall)
    >>> clock.advance(60)
    >>> wall.advance(1)
    >>> clock()
    561.0
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._source: Callable[[], float] | None = None
        self._offset = start

    @classmethod
    def running(cls, source: Callable[[], float] = time.time) -> FakeClock:
        """A clock that shows ``source()`` plus every ``advance`` so far.

        Args:
            source: the real clock it runs with, in epoch seconds.

        Returns:
            A clock at ``source()`` now, that ``advance`` and ``move_to`` move ahead of it.
        """
        clock = cls(0.0)
        clock._source = source
        return clock

    def __call__(self) -> float:
        if self._source is None:
            return self._offset
        return self._source() + self._offset

    @property
    def now(self) -> float:
        """The time the clock shows (the same as ``clock()``)."""
        return self()

    @now.setter
    def now(self, when: float) -> None:
        self._offset = when if self._source is None else self._offset + when - self()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self._offset += seconds

    def move_to(self, when: float) -> None:
        """Move the clock to ``when`` (never backwards)."""
        if self._source is None:
            self._offset = max(self._offset, when)  # exactly ``when``: due times compare equal
        else:
            self._offset += max(0.0, when - self())


@attrs.frozen
class JournalEntry:
    """One call of a step or compensation (``name`` is ``t`` or ``t.undo``), or a note."""

    instance_id: str
    name: str
    idempotency_key: str
    attempt: int
    result: str
    """``ok``, ``raised``, the injected fault's kind, or a note of the driver."""
    ran: bool = True
    """whether the user's function body ran (an injected error or crash before it: no)."""

    def __str__(self) -> str:
        ran = "" if self.ran else " (body not run)"
        return f"{self.instance_id[:8]} {self.name} #{self.attempt}: {self.result}{ran}"


@attrs.frozen
class Outcome:
    """What happened in one run of a plan."""

    definition: Definition
    plan: FaultPlan
    runs: tuple[Run, ...]
    """every run of the saga started under the plan, with its history, oldest first."""
    journal: tuple[JournalEntry, ...]
    world: Any
    """what ``setup`` returned: the user's domain, for the invariant."""
    notes: tuple[str, ...] = ()
    """violations the driver saw while running (e.g. two open runs on one key)."""
    sent: tuple[tuple[str, str, str, float], ...] = ()
    """(run id, event, event id, when) of every event sent without an error."""

    @property
    def run(self) -> Run:
        """The first run (the one the plan started)."""
        return self.runs[0]

    def scenario(self) -> str:
        """A readable account: the saga's steps, the plan, the calls and each history."""
        lines = [f"saga {self.definition.name!r}: steps"]
        for t in self.definition.transitions.values():
            if t.step is None:
                continue
            marks = [m for m, on in (("pivot", t.step.pivot), ("undo", t.compensatable)) if on]
            lines.append(f"  {t.name}: {t.source} -> {t.target} {' '.join(marks)}".rstrip())
        lines.append(f"plan: {self.plan}")
        lines.append("calls:")
        lines.extend(f"  {entry}" for entry in self.journal)
        for run in self.runs:
            lines.append(f"run {run.id[:8]} ended {run.status.value} in {run.state!r}:")
            for h in run.history:
                what = h.transition or ""
                error = f" ({h.error.type}: {h.error.message})" if h.error else ""
                lines.append(
                    f"  {h.kind.value:<18} {what:<12} {h.from_state} -> {h.to_state}{error}"
                )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)
