"""Forking a run: a new run that restarts a stored one from a chosen step.

The core decides whether the fork is allowed and what it starts with
(:meth:`~statesaga.core.Interpreter.fork`); this room inserts the new run
with its ``forked_from`` record and, in the same transaction, the
``forked_to`` record on the original, then drives the new run like a start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from statesaga.locks.base import Lease
from statesaga.runtime.claims import Claims
from statesaga.runtime.codec import history_rows, new_row, operator_row, record_of, snapshot_of
from statesaga.runtime.drive import Drive
from statesaga.runtime.held import HeldRun
from statesaga.runtime.inbox import Inbox
from statesaga.runtime.reads import get_row
from statesaga.runtime.requests import Driver
from statesaga.serde import converter

__all__ = ["Forks"]


class Forks:
    """Makes forks of stored runs (see ``Engine.fork``)."""

    def __init__(
        self,
        claims: Claims,
        drive: Drive,
        inbox: Inbox,
        clock: Callable[[], float],
        default_deadline: float | None,
    ) -> None:
        self.claims = claims
        self.drive = drive
        self.inbox = inbox
        self.clock = clock
        self.default_deadline = default_deadline

    def fork(
        self, instance_id: str, step: str, *, note: str | None, by: str | None, wait: float
    ) -> Driver:
        """Insert and drive a fork of ``instance_id`` from ``step`` until it waits or ends."""
        claims = self.claims
        store = claims.store
        row = get_row(store, instance_id)
        definition, core = claims.registry.for_row(row)
        original = snapshot_of(row, definition)
        history = [record_of(h) for h in store.history(row.id)]
        now = self.clock()
        default = definition.deadline or self.default_deadline
        fork_id = uuid.uuid4().hex
        # refused (ForkNotAllowed) before anything is locked or written
        nxt, link = core.fork(
            original,
            history,
            step,
            instance_id=fork_id,
            keyed=row.entity_key is not None,
            now=now,
            deadline=None if default is None else now + default,
            note=note,
            by=by,
        )
        key = row.entity_key
        lease: Lease | None = None
        if key is not None and claims.locks.locks is not None:
            lease = yield from claims.acquire(key, wait, definition.name)
        try:
            run = HeldRun(
                definition,
                core,
                fork_id,
                1,
                1,
                nxt.snapshot,
                converter.structure(row.input, definition.input_type),
                row.correlation_id,
                key,
                lease,
                created_at=now,
                updated_at=now,
            )
            inserted = new_row(run, nxt, row.input, None, now, claims.leasing)
            run.leased = inserted.lease_owner is not None
            rows = [*history_rows(run, nxt, now, now, version=1), operator_row(row, link, now)]
            # the unique open-run index refuses it (EntityBusy) if a run now holds the key
            yield from claims.insert(inserted, rows, now + (wait if lease is None else 0.0))
            claims.reporter.started(run)
            result: Any = yield from self.drive.hold(run, nxt)
        finally:
            if lease is not None:
                claims.locks.release(lease)
        return (yield from self.inbox.after_release(result))
