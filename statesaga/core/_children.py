"""Child sagas: the parent's wait for a child run, its wake-up, and compensating a child.

A child step (``.child(Saga, input=...)``) starts another saga under an
idempotency key derived from the step's own (:func:`child_key`), so a parent
that crashed after starting it finds the same child again. If the child does
not end at once, the parent waits in the step's source state with the step
still pending (:class:`ChildWaiting`); when the child ends, the runtime sends
the parent :func:`child_event` and the parent runs the step again, which
finds the ended child and reads its outcome. Stopping a parent that waits for
its child (a cancel, the deadline) compensates the child step too, and a
completed child is compensated on its parent's request
(:class:`CompensateRequested`): it keeps its stack of compensatable steps
when it completes for that.

>>> key = child_key(idempotency_key("p-1", 2, "book"))
>>> key, parent_of(key)
('child:p-1:2:book', ('p-1', 'book'))
>>> parent_of("order-42") is None, child_event("book")
(True, 'book:child_ended')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from statesaga.core._types import (
    ACCEPT,
    LATE,
    ErrorInfo,
    ErrorKind,
    EventFit,
    HistoryKind,
    Next,
    Record,
    Snapshot,
    Status,
    idempotency_key,  # noqa: F401 - the doctest's step key
)
from statesaga.errors import CancelNotAllowed, InvalidOperation

if TYPE_CHECKING:
    from statesaga.core._forward import Forward
    from statesaga.definition import TransitionDef

__all__ = [
    "CHILD_KEY_PREFIX",
    "ChildOutcome",
    "ChildRules",
    "ChildWaiting",
    "CompensateRequested",
    "child_event",
    "child_event_id",
    "child_fit",
    "child_key",
    "child_transition",
    "parent_of",
    "waits_for_child",
]

#: the prefix of a child run's idempotency key: ``child:<parent id>:<seq>:<transition>``
CHILD_KEY_PREFIX = "child:"
_EVENT_SUFFIX = ":child_ended"


def child_key(step_key: str) -> str:
    """The idempotency key of the child a step (or its compensation) starts or undoes."""
    return CHILD_KEY_PREFIX + step_key.removesuffix(":undo")


def parent_of(key: str | None) -> tuple[str, str] | None:
    """``(parent id, child step)`` of a run started by a child step, from its idempotency key."""
    if key is None or not key.startswith(CHILD_KEY_PREFIX):
        return None
    parts = key[len(CHILD_KEY_PREFIX) :].split(":")
    if len(parts) != 3:
        return None
    return parts[0], parts[2]


def child_event(transition: str) -> str:
    """The event a parent receives when the child of its step ``transition`` ends."""
    return transition + _EVENT_SUFFIX


def child_transition(event: str) -> str | None:
    """The child step an event reports on (``None``: an ordinary event)."""
    return event.removesuffix(_EVENT_SUFFIX) if event.endswith(_EVENT_SUFFIX) else None


def child_event_id(child_id: str) -> str:
    """The inbox event id of a child's end: one delivery, however often it is reported."""
    return f"child-ended:{child_id}"


def child_fit(snapshot: Snapshot, event: str) -> EventFit:
    """Whether a child's end applies: the parent still runs or waits for that child step."""
    transition = child_transition(event)
    status = snapshot.status
    if snapshot.pending == transition and status in (Status.WAITING, Status.RUNNING):
        return EventFit(ACCEPT)
    return EventFit(
        LATE,
        f"the run no longer waits for the child of step {transition!r} "
        f"(it is {status} in state {snapshot.state!r})",
    )


@attrs.frozen
class ChildWaiting:
    """The child step started (or found) child run ``child_id``, which has not ended yet."""

    child_id: str


@attrs.frozen
class CompensateRequested:
    """A completed child run is asked to compensate, because its parent compensates."""

    reason: str = "its parent compensates"
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


ChildOutcome = ChildWaiting | CompensateRequested


class ChildRules:
    """The rules of child steps, over one definition's forward path."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self.definition = forward.definition

    def child_step(self, snapshot: Snapshot) -> TransitionDef | None:
        """The child step the run is on (running it, or waiting for its child)."""
        if snapshot.pending is None:
            return None
        t = self.definition.transitions[snapshot.pending]
        return t if t.step is not None and t.step.child is not None else None

    def waiting(self, snapshot: Snapshot, child_id: str, now: float) -> Next:
        """The child has not ended: the parent waits for it, its step still pending."""
        t = self.forward.pending(snapshot, Status.RUNNING)
        if t.step is None or t.step.child is None:
            raise InvalidOperation(
                f"step {t.name!r} starts no child saga",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        waiting = attrs.evolve(snapshot, status=Status.WAITING, wake_at=None, event=None)
        record = Record(
            HistoryKind.WAIT, t.source, t.source, t.name, snapshot.attempt, link=child_id
        )
        return self.forward.settle(waiting, now, [record])

    def ended(self, snapshot: Snapshot, now: float) -> Next:
        """The child ended: run the step again (it finds the child and reads its outcome)."""
        if self.child_step(snapshot) is None or snapshot.status not in (
            Status.WAITING,
            Status.RUNNING,
        ):
            raise InvalidOperation(
                f"instance {snapshot.instance_id} waits for no child "
                f"(status {snapshot.status}, state {snapshot.state!r})",
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        if snapshot.status is Status.WAITING:
            snapshot = attrs.evolve(snapshot, status=Status.RUNNING, wake_at=None)
        return self.forward.settle(snapshot, now, [])

    def compensate(self, snapshot: Snapshot, request: CompensateRequested, now: float) -> Next:
        """A completed child compensates its steps, in reverse, because its parent does."""
        if snapshot.status is not Status.COMPLETED or snapshot.pivoted:
            why = "it passed a pivot" if snapshot.pivoted else f"it is {snapshot.status}"
            raise CancelNotAllowed(
                f"instance {snapshot.instance_id} cannot be compensated as a completed child: "
                f"{why}",
                saga=self.definition.name,
                instance_id=snapshot.instance_id,
                state=snapshot.state,
            )
        error = ErrorInfo(
            "ParentCompensated",
            request.reason,
            retryable=False,
            kind=ErrorKind.CANCELLED,
            details=request.details,
        )
        record = Record(HistoryKind.CANCEL, snapshot.state, snapshot.state, None, 0, error)
        compensating = attrs.evolve(
            snapshot, status=Status.COMPENSATING, attempt=1, wake_at=None, error=error
        )
        return self.forward.settle(compensating, now, [record])


def waits_for_child(snapshot: Snapshot, t: TransitionDef | None) -> bool:
    """A stopped run was waiting for the child of ``t``: the child step is undone too."""
    return (
        snapshot.status is Status.WAITING
        and t is not None
        and t.step is not None
        and t.step.child is not None
    )
