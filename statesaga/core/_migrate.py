"""The migration rule: whether a run of an older version may move onto a newer one, and how.

The runtime claims the run and writes what :meth:`Migrator.move` returns; it
never decides itself which runs may move or where they land.

>>> import attrs
>>> from statesaga import Saga, State
>>> from statesaga.migration import Migration
>>> @attrs.frozen
... class Data:
...     pass
>>> class V1(Saga[Data, Data]):
...     name = "pay"
...     new = State(initial=True)
...     done = State(final=True)
...     pay = new.to(done).on("paid")
>>> class V2(Saga[Data, Data]):
...     name = "pay"
...     version = 2
...     migrates_from = Migration(V1, states={"new": "unpaid"})
...     unpaid = State(initial=True)
...     done = State(final=True)
...     pay = unpaid.to(done).on("paid")
>>> rule = Migrator(V2.definition, 1)
>>> waiting = Snapshot("i-1", "new", Status.WAITING, Data())
>>> rule.fit(waiting, V1.definition.graph_hash)
MigrationFit(verdict='move', state='unpaid', reason=None)
>>> moved = rule.move(waiting, Data(), now=0.0)
>>> moved.snapshot.state, moved.snapshot.status, moved.record.kind
('unpaid', <Status.WAITING: 'waiting'>, <HistoryKind.MIGRATED: 'migrated'>)
>>> rule.fit(attrs.evolve(waiting, status=Status.COMPENSATING), V1.definition.graph_hash).reason
'it is compensating: it ends on version 1'
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga.core._forward import Forward
from statesaga.core._rules import Rules
from statesaga.core._types import Done, HistoryKind, Record, Snapshot, Status
from statesaga.definition import Definition, MigrationDef
from statesaga.errors import InvalidOperation

__all__ = ["MOVE", "SKIP", "MigrationFit", "Migrated", "Migrator"]

MOVE, SKIP = "move", "skip"


@attrs.frozen
class MigrationFit:
    """Whether a run may move now (``"move"``, to ``state``) or not (``"skip"``: ``reason``)."""

    verdict: str
    state: str | None = None
    reason: str | None = None

    @property
    def moves(self) -> bool:
        """The run may move now."""
        return self.verdict == MOVE


@attrs.frozen
class Migrated:
    """A moved run: its snapshot on the new version, its history record, when it is next due."""

    snapshot: Snapshot
    record: Record
    due_at: float | None


class Migrator:
    """The rule of moving runs of version ``from_version`` onto ``target``, which declares it.

    Raises:
        InvalidOperation: ``target`` declares no migration from ``from_version``.
    """

    def __init__(self, target: Definition, from_version: int) -> None:
        plan = target.migrations.get(from_version)
        if plan is None:
            declared = ", ".join(str(v) for v in sorted(target.migrations)) or "none"
            raise InvalidOperation(
                f"saga {target.name!r} version {target.version} declares no migration from "
                f"version {from_version} (it declares migrations from: {declared}); add "
                f"migrates_from = Migration(<version {from_version} class>, states=...) to it"
            )
        self.plan: MigrationDef = plan
        self.target = target
        self.source = plan.source
        self._rules = Rules(target)
        self._forward = Forward(self._rules)
        self._source_rules = Rules(plan.source)

    def fit(self, snapshot: Snapshot, graph_hash: str) -> MigrationFit:
        """Whether a run of the old version in ``snapshot`` (started on ``graph_hash``) may move.

        Waiting runs move, and runs that are due (running, not held): one with a
        step pending moves only if the new graph has that transition out of the
        state it lands in (the same step, pivot or not), so the try goes on there.
        Compensating and failed runs end on the version they started on.
        """
        source = self.source
        old = f"version {source.version}"
        if graph_hash != source.graph_hash:
            return MigrationFit(
                SKIP,
                reason=f"it was started on another graph of {old} (hash {graph_hash}; the "
                f"migration declares {source.graph_hash})",
            )
        status = snapshot.status
        if status is Status.COMPENSATING:
            return MigrationFit(SKIP, reason=f"it is compensating: it ends on {old}")
        if status is Status.FAILED:
            return MigrationFit(
                SKIP, reason=f"it failed: retry it on {old}, or leave it for an operator"
            )
        if status.is_terminal:
            return MigrationFit(SKIP, reason=f"it has ended ({status})")
        state = self.plan.states[snapshot.state]
        for done in snapshot.stack:
            if done.transition not in self.plan.transitions:
                return MigrationFit(
                    SKIP,
                    reason=f"its step {done.transition!r} may still need undoing and version "
                    f"{self.target.version} has no compensation for it",
                )
        if status is Status.RUNNING and snapshot.pending is not None:
            problem = self._pending_problem(snapshot.pending, state)
            if problem is not None:
                return MigrationFit(SKIP, reason=problem)
        return MigrationFit(MOVE, state)

    def move(self, snapshot: Snapshot, data: Any, now: float) -> Migrated:
        """The run on the new version, with ``data`` as its context (``fit`` must allow it).

        A wait goes on with the timeout it had: a migration neither restarts nor
        drops the timer of a run waiting in a state that still times out.
        """
        fit = self.fit(snapshot, self.source.graph_hash)
        if not fit.moves or fit.state is None:
            raise InvalidOperation(
                f"instance {snapshot.instance_id} may not move: {fit.reason}",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        state = fit.state
        transitions = self.plan.transitions
        stack = tuple(Done(transitions[d.transition], d.seq) for d in snapshot.stack)
        base = attrs.evolve(snapshot, data=data, stack=stack)
        if snapshot.status is Status.RUNNING and snapshot.pending is not None:
            # the pending step's try goes on under its new name (its idempotency key is the
            # run's, its seq and the transition's name); the run was not held, so a pivot
            # pending may have taken effect, as on recovery
            unknown = snapshot.pivot_unknown or self._source_rules.pivot_pending(snapshot)
            moved = attrs.evolve(
                base, state=state, pending=transitions[snapshot.pending], pivot_unknown=unknown
            )
        else:
            moved = self._forward.enter(base, state, now)
            if (
                moved.status is Status.WAITING
                and snapshot.status is Status.WAITING
                and moved.wake_at is not None
                and snapshot.wake_at is not None
            ):
                moved = attrs.evolve(moved, wake_at=snapshot.wake_at)
        record = Record(HistoryKind.MIGRATED, snapshot.state, state)
        return Migrated(moved, record, self._rules.next_due(moved, now))

    def _pending_problem(self, pending: str, state: str) -> str | None:
        old = self.source.transitions[pending]
        name = self.plan.transitions.get(pending)
        new = None if name is None else self.target.transitions.get(name)
        version = f"version {self.target.version}"
        if new is None or new.source != state:
            return (
                f"its step {pending!r} is pending and {version} has no transition "
                f"{name or pending!r} out of {state!r}; it can move once it waits"
            )
        if _pivot(old) != _pivot(new):
            return f"its step {pending!r} is pending and is a pivot on one version only"
        if old.payload_type is not new.payload_type:
            return f"its step {pending!r} is pending with an event payload {version} types apart"
        return None


def _pivot(t: Any) -> bool:
    return t.step is not None and t.step.pivot
