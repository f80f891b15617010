"""An operator's ways out of ``failed``: resolving a run by hand, and forking it from a step.

Both are rules like any other, decided here once: which status may be
resolved to which outcome, and from which step a run may be forked (and what
the fork starts with). The drivers only persist what these answer.

The history keeps no context per transition, so a fork starts with the
original's input and its **latest** context (what the run had when it
stopped), in the chosen step's source state. That is exact for the usual
case, forking from the step a run stopped at; from an earlier step, the
steps run again on a context that already holds what they (and the steps
after them) recorded.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class Data:
...     pass
>>> def book(ctx):
...     return ctx.data
>>> class Trip(Saga[Data, Data]):
...     name = "trip"
...     new = State(initial=True)
...     booked = State()
...     done = State(final=True)
...     reserve = new.to(booked).run(book, undo=book)
...     pay = booked.to(done).run(book, pivot=True)
>>> rules = OperatorRules(Forward(Rules(Trip.definition)))
>>> rules.resolvable(Status.FAILED, Status.COMPENSATED) is None
True
>>> rules.resolvable(Status.FAILED, Status.RUNNING)
'a failed run can be resolved as compensated or completed, not running'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from statesaga.core._forward import Forward
from statesaga.core._rules import Rules
from statesaga.core._types import (
    Finish,
    HistoryKind,
    Next,
    Record,
    ResolveRequested,
    Snapshot,
    Status,
)
from statesaga.errors import ForkNotAllowed, ResolveNotAllowed

__all__ = ["RESOLVE_OUTCOMES", "OperatorRules", "resolve_request"]

#: what a run in each status may be resolved as (only ``failed`` runs may be)
RESOLVE_OUTCOMES: dict[Status, tuple[Status, ...]] = {
    Status.FAILED: (Status.COMPENSATED, Status.COMPLETED),
}

# records of a step being tried on the forward path (a failure of its undo is not one)
_TRIED = (HistoryKind.FORWARD, HistoryKind.EVENT, HistoryKind.TIMEOUT)
_ATTEMPTED = (HistoryKind.RETRY, HistoryKind.FAILURE)


def resolve_request(outcome: Status | str, note: str, by: str | None) -> ResolveRequested:
    """An operator's resolve, its outcome read as a status (``ResolveNotAllowed`` if none)."""
    try:
        status = Status(outcome)
    except ValueError:
        raise ResolveNotAllowed(
            f"{outcome!r} is not a status a run can be resolved as; pass compensated or completed"
        ) from None
    return ResolveRequested(status, note, by)


class OperatorRules:
    """When a run may be resolved or forked, and what either writes."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self.rules: Rules = forward.rules
        self.definition = forward.definition

    # -- resolve --------------------------------------------------------------------------

    def resolvable(self, status: Status, outcome: Status) -> str | None:
        """Why a run in ``status`` cannot be resolved as ``outcome`` (``None``: it can)."""
        allowed = RESOLVE_OUTCOMES.get(status)
        if allowed is None:
            if status is Status.FAILED:  # pragma: no cover - the table above holds it
                return "it is failed"
            fix = (
                "it has ended already"
                if status.is_terminal
                else "it is still being worked on; let it end, or cancel it"
            )
            return f"it is {status}, and only a failed run can be resolved ({fix})"
        if outcome not in allowed:
            return (
                f"a {status} run can be resolved as {' or '.join(s.value for s in allowed)}, "
                f"not {outcome}"
            )
        return None

    def resolve(self, snapshot: Snapshot, request: ResolveRequested, now: float) -> Next:
        """End a ``failed`` run as the operator says, with their note in the history.

        The run stays in the state it stopped in; nothing runs and nothing is
        compensated (the operator repaired things by hand). Its error is kept.
        """
        outcome = Status(request.status)
        reason = self.resolvable(snapshot.status, outcome)
        if reason is None and not request.note.strip():
            reason = "a note is required (say what was repaired by hand, and how)"
        if reason is not None:
            raise ResolveNotAllowed(
                f"run {snapshot.instance_id} cannot be resolved as {outcome}: {reason}",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        ended = Snapshot(
            snapshot.instance_id,
            snapshot.state,
            outcome,
            snapshot.data,
            None,
            0,
            None,
            snapshot.deadline,
            (),
            snapshot.pivoted,
            snapshot.seq,
            snapshot.error,
        )
        record = Record(
            HistoryKind.RESOLVED,
            snapshot.state,
            snapshot.state,
            snapshot.pending,
            note=request.note.strip(),
            by=request.by,
        )
        return Next(ended, Finish(outcome), (record,))

    # -- fork -----------------------------------------------------------------------------

    def fork(
        self,
        original: Snapshot,
        history: Sequence[Record],
        step: str,
        *,
        instance_id: str,
        keyed: bool,
        now: float,
        deadline: float | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> tuple[Next, Record]:
        """A new run ``instance_id`` that restarts ``original`` from transition ``step``.

        Returns the fork's first ``Next`` (its ``forked_from`` record and first
        decision) and the ``forked_to`` record to append to the original.

        The fork starts in ``step``'s source state with the original's latest
        context; an automatic ``step`` is taken first (its guard is not asked
        again: the operator chose it), an event's waits for its event again.
        It owns only what it does itself: it compensates the steps it runs, not
        the ones the original ran before ``step``.

        Raises:
            ForkNotAllowed: the original still holds its entity key (``keyed``
                and open), ``step`` is not a step the original took or tried,
                a pivot that took effect (or may have) comes at or after ``step``
                in the original, or a step before ``step`` was compensated.
        """
        at = self._check_fork(original, history, step, keyed=keyed)
        t = self.rules.transitions[step]
        pivot_at = self._pivot_at(original, history)
        pivoted = pivot_at is not None and pivot_at < at
        first = Snapshot(
            instance_id, t.source, Status.RUNNING, original.data, deadline=deadline, pivoted=pivoted
        )
        if t.event is None and t in self.rules.automatic[t.source]:
            first = attrs.evolve(first, pending=step, attempt=1)
        else:
            first = self.forward.enter(first, t.source, now)
        records = [
            Record(
                HistoryKind.FORKED_FROM,
                t.source,
                t.source,
                step,
                note=note,
                by=by,
                link=original.instance_id,
            )
        ]
        link = Record(
            HistoryKind.FORKED_TO,
            original.state,
            original.state,
            step,
            note=note,
            by=by,
            link=instance_id,
        )
        return self.forward.settle(first, now, records), link

    def fork_steps(self, original: Snapshot, history: Sequence[Record]) -> list[str]:
        """The steps the original took or tried, in the order it first did (fork candidates)."""
        names: list[str] = []
        for index in range(len(history) + 1):
            name = self._tried_at(original, history, index)
            if name is not None and name not in names:
                names.append(name)
        return names

    def _check_fork(
        self, original: Snapshot, history: Sequence[Record], step: str, *, keyed: bool
    ) -> int:
        """Where ``step`` was last tried in ``history`` (``len(history)``: pending), if allowed."""

        def refuse(reason: str) -> ForkNotAllowed:
            return ForkNotAllowed(
                f"run {original.instance_id} cannot be forked from {step!r}: {reason}",
                saga=self.definition.name,
                instance_id=original.instance_id,
                state=original.state,
                step=step,
            )

        if keyed and original.status.is_open:
            raise refuse(
                f"it is still {original.status} and holds its entity key, so a fork could not "
                "start; resolve it first (`statesaga resolve ID --as compensated --note ...`), "
                "or let it end"
            )
        steps = self.fork_steps(original, history)
        if step not in steps:
            offered = ", ".join(steps) or "none"
            raise refuse(f"it never took or tried that step; fork from one it did: {offered}")
        at = max(i for i in range(len(history) + 1) if self._tried_at(original, history, i) == step)
        pivot_at = self._pivot_at(original, history)
        if pivot_at is not None and at <= pivot_at:
            pivot = self._pivot_name(original, history, pivot_at)
            after = [repr(s) for s in steps if self._last(original, history, s) > pivot_at]
            hint = (
                f"fork from a step after it ({', '.join(after)})" if after else "no step follows it"
            )
            raise refuse(
                f"a fork would run pivot {pivot!r} again, and it took effect (or may have) in "
                f"this run; {hint}, or start a new run if its effect was undone by hand"
            )
        undone = [
            r.transition
            for r in history
            if r.kind is HistoryKind.COMPENSATE
            and r.transition is not None
            and r.transition != step
            and self._last(original, history, r.transition) < at
        ]
        if undone:
            earliest = min(undone, key=lambda name: self._last(original, history, name))
            raise refuse(
                f"{earliest!r}, which came before it, was compensated (its effect was undone); "
                f"fork from {earliest!r} or an earlier step"
            )
        return at

    def _tried_at(self, original: Snapshot, history: Sequence[Record], index: int) -> str | None:
        """The forward step tried by ``history[index]`` (past the end: the one still pending)."""
        if index == len(history):
            pending = original.pending
            pending_forward = original.status in (Status.RUNNING, Status.FAILED)
            return pending if pending_forward and pending is not None else None
        record = history[index]
        if record.transition is None:
            return None
        if record.kind in _TRIED:
            return record.transition
        if record.kind in _ATTEMPTED and not _is_undo(record):
            return record.transition
        return None

    def _last(self, original: Snapshot, history: Sequence[Record], step: str) -> int:
        indices = [
            i for i in range(len(history) + 1) if self._tried_at(original, history, i) == step
        ]
        return max(indices, default=-1)

    def _pivot_at(self, original: Snapshot, history: Sequence[Record]) -> int | None:
        """Where the last pivot that took effect (or may have) sits in ``history``, if any."""
        transitions = self.rules.transitions
        found: int | None = None
        for index, record in enumerate(history):
            t = transitions.get(record.transition or "")
            if record.kind in _TRIED and t is not None and t.step is not None and t.step.pivot:
                found = index
        pending = original.pending
        if pending is not None and (original.pivot_unknown or self.rules.bound(original)):
            t = transitions[pending]
            if t.step is not None and t.step.pivot:
                return self._last(original, history, pending)
        return found

    def _pivot_name(self, original: Snapshot, history: Sequence[Record], index: int) -> str:
        name = self._tried_at(original, history, index)
        return name if name is not None else str(original.pending)


def _is_undo(record: Record) -> bool:
    error: Any = record.error
    return error is not None and str(error.step or "").endswith(".undo")
