"""Events and cancels: recorded in the run's durable inbox first, consumed when it can be.

``send`` writes the entry in one short transaction (deduplicated by its
event id) whatever the run is doing; then the sender consumes it if the run
is free. Whoever holds a run takes its inbox before letting it go, and
looks again once it has: an entry is consumed by its sender, the holder or
a worker, never lost, and a race is never an error to the sender.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Mapping
from typing import Any

from statesaga.core import child_transition
from statesaga.definition import Definition
from statesaga.delivery import Delivery, DeliveryStatus
from statesaga.errors import EntityBusy, EventNotAllowed, FencedOut
from statesaga.failures import json_details
from statesaga.run import Run
from statesaga.runtime.claims import Claims
from statesaga.runtime.drive import Drive
from statesaga.runtime.limits import PayloadLimit
from statesaga.runtime.reads import get_row
from statesaga.runtime.requests import Driver, Request
from statesaga.serde import converter, structure
from statesaga.store.base import InboxRow, InstanceRow
from statesaga.store.dialects import is_busy

__all__ = ["Inbox"]


class Inbox:
    """Sends events and cancels to runs, and lets runs take what was sent meanwhile."""

    def __init__(
        self,
        claims: Claims,
        drive: Drive,
        clock: Callable[[], float],
        limit: PayloadLimit | None = None,
    ) -> None:
        self.limit = PayloadLimit() if limit is None else limit
        self.claims = claims
        self.drive = drive
        self.store = claims.store
        self.clock = clock

    def send(
        self,
        instance_id: str,
        kind: str,
        event: str | None,
        payload: Any,
        event_id: str | None,
        wait: float,
    ) -> Driver:
        """Record an event (or cancel) in the run's inbox, then consume it if the run is free."""
        row = get_row(self.store, instance_id)
        definition, _ = self.claims.registry.for_row(row)
        if kind == "event":
            assert event is not None
            payload = self._payload_json(definition, row, event, payload)
            if payload is not None:
                self.limit.encoded(
                    payload,
                    f"payload of event {event!r}",
                    saga=definition.name,
                    instance_id=row.id,
                    state=row.state,
                )
        entry, duplicate = self.store.receive(
            InboxRow(
                instance_id=row.id,
                event_id=event_id or uuid.uuid4().hex,
                kind=kind,
                event=event,
                payload=payload,
                status=DeliveryStatus.PENDING.value,
                reason=None,
                correlation_id=row.correlation_id,
                received_at=self.clock(),
            )
        )
        run: Run | None = None
        if not duplicate:
            run = yield from self.consume(row.id, wait)
            entry = self.store.inbox_entry(row.id, entry.event_id) or entry
        if run is None:
            run = self.claims.reads.run_of(get_row(self.store, row.id))
        return Delivery(
            event_id=entry.event_id,
            event=event,
            instance_id=row.id,
            status=DeliveryStatus(entry.status),
            reason=entry.reason,
            duplicate=duplicate,
            run=run,
        )

    def cancel(
        self,
        instance_id: str,
        reason: str,
        details: Mapping[str, Any] | None,
        event_id: str | None,
        wait: float,
    ) -> Driver:
        """Record a cancel (its reason and details) in the run's inbox, then consume it."""
        payload: dict[str, Any] = {"reason": reason}
        if details:
            payload["details"] = json_details(details)
        return (yield from self.send(instance_id, "cancel", None, payload, event_id, wait))

    @staticmethod
    def _payload_json(definition: Definition, row: InstanceRow, event: str, payload: Any) -> Any:
        """The event's payload, checked against its declared type and made JSON."""
        takers = [t for t in definition.transitions.values() if t.event == event]
        if not takers:
            known = sorted({t.event for t in definition.transitions.values() if t.event})
            raise EventNotAllowed(
                f"saga {definition.name!r} has no event {event!r} (it takes: "
                f"{', '.join(known) or 'no events'}); check the event's name",
                event=event,
                saga=definition.name,
                instance_id=row.id,
                state=row.state,
            )
        here = definition.events_from.get(row.state, {}).get(event)
        payload_type = (here or takers[0]).payload_type
        if payload_type is None:
            return None if payload is None else converter.unstructure(payload)
        typed = structure(
            payload, payload_type, what=f"payload of event {event!r}", saga=definition.name
        )
        return converter.unstructure(typed, payload_type)

    def consume(self, instance_id: str, wait: float) -> Generator[Request, Any, Run | None]:
        """Claim the run and let it take its inbox; ``None`` if someone else holds it.

        Whoever holds the run takes the inbox before it lets the run go, and
        checks again once it has: so an event recorded while the run was busy is
        consumed by the holder, by this sender, or by a worker, never lost.
        """
        keeper = self.drive.keeper
        for _ in range(3):
            if not keeper.reserve():
                return None  # the engine is full: the entry waits for a worker (or the holder)
            try:
                run = yield from self.claims.claim(instance_id, wait)
            except (EntityBusy, FencedOut) as error:
                keeper.release()
                if isinstance(error, FencedOut):
                    continue  # the run moved between reading and claiming it: look again
                return None  # the holder (or a worker) takes it
            except BaseException as error:
                keeper.release()
                if is_busy(error):
                    # SQLite's write lock stayed taken past the busy timeout: the entry is
                    # recorded, so as for a held run, the holder or a worker takes it
                    return None
                raise
            try:
                now = self.clock()
                nxt = self.drive.transitions.next_step(run, now)
                result: Run = yield from self.drive.hold(run, nxt, started=now, operation="send")
            except FencedOut:
                # another engine claimed the run meanwhile: what this one took from the
                # inbox is persisted, and the run is theirs to drive on
                return None
            finally:
                keeper.release()
                if run.lease is not None:
                    self.claims.locks.release(run.lease)
            if not self._has_pending(result):
                return result
        return None

    def _has_pending(self, result: Run) -> bool:
        """A run just let go has something in its inbox that it can take now.

        Entries only a later state takes stay for when the run gets there; late
        entries of an ended run are rejected by whoever claims it next.
        """
        if result.status.is_terminal:
            return False
        pending = self.store.pending(result.id)
        if not pending:
            return False
        definition = self.claims.registry.get(result.saga, result.version)
        takes = set() if definition is None else set(definition.events_in(result.state))
        return any(
            entry.kind == "cancel"
            or entry.event in takes
            # a child's end: the core tells whether the run still waits for it
            or (entry.event is not None and child_transition(entry.event) is not None)
            for entry in pending
        )

    def after_release(self, result: Run) -> Generator[Request, Any, Run]:
        """After letting a run go: take the events that came while it was held."""
        if not self._has_pending(result):
            return result
        taken = yield from self.consume(result.id, 0.0)
        return result if taken is None else taken
