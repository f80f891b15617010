"""What a plan's run yields, and the pieces the driver plays with: the fake clock,
the injected failures and crash, the journal of calls.

>>> clock = FakeClock(100.0)
>>> clock.advance(5); clock()
105.0
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga.definition import Definition
from statesaga.errors import NonRetryableError
from statesaga.run import Run
from statesaga.testing.plans import FaultPlan

__all__ = [
    "LEASE_TTL",
    "MAX_ROUNDS",
    "OPERATOR_RETRIES",
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
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds

    def move_to(self, when: float) -> None:
        """Move the clock to ``when`` (never backwards)."""
        self.now = max(self.now, when)


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
