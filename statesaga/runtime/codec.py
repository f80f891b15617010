"""Pure conversions: snapshots and held runs <-> instance rows, history rows, runs.

Nothing here reads or writes the store: the drive loop hands the rows it
builds to the store, and the reads hand the rows they got back here.

>>> leasing = Leasing(owner="me", lease_ttl=30.0, max_inline_sleep=5.0)
>>> from statesaga.core import Sleep, Wait
>>> leasing.fields(Sleep(until=102.0), now=100.0)  # a short sleep keeps the lease
('me', 130.0, 102.0)
>>> leasing.fields(Wait(("paid",), until=160.0), now=100.0)  # a wait lets it go
(None, None, 160.0)
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga.core import (
    Done,
    Finish,
    HistoryKind,
    Interpreter,
    Next,
    Record,
    Sleep,
    Snapshot,
    Status,
    Wait,
    parent_of,
)
from statesaga.definition import Definition
from statesaga.delivery import DeliveryStatus, InboxEntry
from statesaga.failures import decode as decode_error
from statesaga.failures import encode as encode_error
from statesaga.run import HistoryEntry, Run
from statesaga.runtime.branching import forking_json, forking_of
from statesaga.runtime.held import HeldRun
from statesaga.serde import converter, dumps
from statesaga.store.base import HistoryRow, InboxRow, InstanceRow, Write

__all__ = [
    "Leasing",
    "encode",
    "entry_of",
    "held_of",
    "history_rows",
    "inbox_entry_of",
    "machine_of",
    "new_row",
    "operator_row",
    "payload_of",
    "record_of",
    "result_of",
    "run_of",
    "snapshot_of",
    "write_of",
]

encode = dumps


@attrs.frozen
class Leasing:
    """Who holds the leases this engine takes, for how long, and when it lets a run go."""

    owner: str
    lease_ttl: float
    max_inline_sleep: float

    def fields(self, decision: Any, now: float) -> tuple[str | None, float | None, float | None]:
        """(lease owner, lease expiry, due at) after a transition that leads to ``decision``.

        The lease is let go when the run waits, ends, or sleeps longer than
        ``max_inline_sleep`` (then ``due_at`` tells ``recover`` when to wake it).
        """
        if isinstance(decision, _WAIT_OR_FINISH):
            return None, None, decision.until if isinstance(decision, Wait) else None
        if isinstance(decision, Sleep):
            due = decision.until
            release = due - now > self.max_inline_sleep
        else:
            due, release = None, False
        if release:
            return None, None, due
        return self.owner, now + self.lease_ttl, due


_WAIT_OR_FINISH = (Wait, Finish)


def machine_of(snapshot: Snapshot, definition: Definition) -> dict[str, Any]:
    """The interpreter's bookkeeping as the instance row's ``machine`` JSON."""
    event = snapshot.event
    if event is not None and snapshot.pending is not None:
        payload_type = definition.transitions[snapshot.pending].payload_type
        event = converter.unstructure(event, payload_type) if payload_type else event
    return {
        "pending": snapshot.pending,
        "wake_at": snapshot.wake_at,
        "stack": [[done.transition, done.seq] for done in snapshot.stack],
        "pivoted": snapshot.pivoted,
        "seq": snapshot.seq,
        "event": event,
        "unknown": snapshot.pivot_unknown,
        **({"measure": True} if snapshot.measure_timeout else {}),
        **({"fork": forking_json(snapshot.forking)} if snapshot.forking is not None else {}),
    }


def snapshot_of(row: InstanceRow, definition: Definition) -> Snapshot:
    """The interpreter's snapshot of a stored instance."""
    machine = row.machine
    pending = machine.get("pending")
    event = machine.get("event")
    if event is not None and pending is not None:
        payload_type = definition.transitions[pending].payload_type
        if payload_type is not None:
            event = converter.structure(event, payload_type)
    return Snapshot(
        instance_id=row.id,
        state=row.state,
        status=Status(row.status),
        data=converter.structure(row.context, definition.context_type),
        pending=pending,
        attempt=row.attempt,
        wake_at=machine.get("wake_at"),
        deadline=row.deadline,
        stack=tuple(Done(t, seq) for t, seq in machine.get("stack", ())),
        pivoted=bool(machine.get("pivoted")),
        seq=int(machine.get("seq", 0)),
        error=None if row.error is None else decode_error(row.error),
        event=event,
        pivot_unknown=bool(machine.get("unknown")),
        measure_timeout=bool(machine.get("measure")),
        forking=None if machine.get("fork") is None else forking_of(machine["fork"]),
    )


def held_of(row: InstanceRow, definition: Definition, core: Interpreter, now: float) -> HeldRun:
    """A claimed row as a run this engine holds (its leases renewed as of ``now``)."""
    return HeldRun(
        definition,
        core,
        row.id,
        row.version,
        row.epoch,
        snapshot_of(row, definition),
        converter.structure(row.input, definition.input_type),
        row.correlation_id,
        row.entity_key,
        # a completed run keeps its output when a late event is recorded against it
        output=None
        if row.output is None or definition.output_type is None
        else converter.structure(row.output, definition.output_type),
        created_at=row.created_at,
        updated_at=row.updated_at,
        renewed_at=now,
        inbox_pending=row.inbox_pending,
        trace_context=row.trace_context,
        idempotency_key=row.idempotency_key,
        stored=(row.status, row.due_at, row.lease_owner),
    )


def write_of(
    run: HeldRun, snapshot: Snapshot, decision: Any, now: float, leasing: Leasing
) -> Write:
    """The instance row's new values after a transition to ``snapshot``.

    The context's JSON is cached on ``run``: steps that keep the data need no
    new encoding.
    """
    owner, expires, due = leasing.fields(decision, now)
    definition = run.definition
    output = None
    if snapshot.status is Status.COMPLETED and run.output is not None:
        output = encode(
            converter.unstructure(run.output, definition.output_type or type(run.output))
        )
    data = snapshot.data
    if data is not run.encoded_data:
        run.encoded_context = encode(converter.unstructure(data, definition.context_type))
        run.encoded_data = data
    status = snapshot.status._value_  # (a plain attribute: .value is a descriptor)
    return Write(
        state=snapshot.state,
        status=status,
        context=run.encoded_context,
        machine=encode(machine_of(snapshot, definition)),
        error=None if snapshot.error is None else encode(encode_error(snapshot.error)),
        output=output,
        attempt=snapshot.attempt,
        due_at=due,
        lease_owner=owner,
        lease_expires_at=expires,
        updated_at=now,
        keep=_keep(run, status, due, owner, now, leasing.lease_ttl),
    )


#: a lease younger than this share of its ttl is not renewed by a transition (the keeper
#: renews it in its batches): an ordinary transition then rewrites no index entry
RENEW_AFTER = 1 / 6


def _keep(
    run: HeldRun, status: str, due: float | None, owner: str | None, now: float, ttl: float
) -> frozenset[str]:
    """The indexed columns a write may leave as the row holds them (see ``Write.keep``)."""
    stored = run.stored
    if stored is None:
        return _KEEP_NOTHING
    same_status, same_due, same_owner = stored[0] == status, stored[1] == due, stored[2] == owner
    fresh = same_owner and owner is not None and now - run.renewed_at < ttl * RENEW_AFTER
    return _KEEPS[same_status, same_due, same_owner, fresh]


_KEEP_NOTHING: frozenset[str] = frozenset()
_KEEPS = {
    (status, due, owner, fresh): frozenset(
        name
        for name, kept in (
            ("status", status),
            ("due_at", due),
            ("lease_owner", owner),
            ("lease_expires_at", fresh),
        )
        if kept
    )
    for status in (False, True)
    for due in (False, True)
    for owner in (False, True)
    for fresh in (False, True)
}


def new_row(
    run: HeldRun,
    nxt: Next,
    input_json: Any,
    idempotency_key: str | None,
    now: float,
    leasing: Leasing,
) -> InstanceRow:
    """The row a start inserts."""
    owner, expires, due = leasing.fields(nxt.decision, now)
    definition = run.definition
    snapshot = nxt.snapshot
    return InstanceRow(
        id=run.id,
        saga=definition.name,
        saga_version=definition.version,
        graph_hash=definition.graph_hash,
        entity_key=run.key,
        idempotency_key=idempotency_key,
        correlation_id=run.correlation_id,
        state=snapshot.state,
        status=snapshot.status._value_,
        input=input_json,
        context=converter.unstructure(snapshot.data, definition.context_type),
        output=None,
        machine=machine_of(snapshot, definition),
        error=None if snapshot.error is None else encode_error(snapshot.error),
        attempt=snapshot.attempt,
        version=1,
        epoch=1,
        lease_owner=owner,
        lease_expires_at=expires,
        due_at=due,
        deadline=snapshot.deadline,
        created_at=now,
        updated_at=now,
        trace_context=run.trace_context,
    )


def history_rows(
    run: HeldRun, nxt: Next, started: float, now: float, *, version: int
) -> list[HistoryRow]:
    """One history row per record of ``nxt``, written with instance version ``version``."""
    rows = []
    definition = run.definition
    instance_id, epoch, correlation_id = run.id, run.epoch, run.correlation_id
    for record in nxt.records:
        kind = record.kind
        step_name = None
        t = _step_of(definition, record.transition)
        if t is not None and t.step is not None and not kind.by_operator:
            step_name = t.step.rollback_name if record.undo else t.step.function_name
        rows.append(
            HistoryRow(
                instance_id,
                version,
                kind._value_,
                record.transition,
                step_name,
                record.from_state,
                record.to_state,
                record.attempt,
                record.event,
                _error_column(record),
                epoch,
                correlation_id,
                started,
                now,
            )
        )
    return rows


def _step_of(definition: Definition, name: str | None) -> Any:
    """The transition (or parallel branch step) a record names, if any."""
    if name is None:
        return None
    found = definition.transitions.get(name)
    return found if found is not None else definition.branch_steps.get(name)


def run_of(row: InstanceRow, definition: Definition | None, history: list[HistoryRow]) -> Run:
    """A stored instance as a ``Run``; typed by ``definition`` when it is registered."""
    saga_input, data, output = row.input, row.context, row.output
    if definition is not None:
        saga_input = converter.structure(row.input, definition.input_type)
        data = converter.structure(row.context, definition.context_type)
        if row.output is not None and definition.output_type is not None:
            output = converter.structure(row.output, definition.output_type)
    return Run(
        id=row.id,
        saga=row.saga,
        version=row.saga_version,
        status=Status(row.status),
        state=row.state,
        key=row.entity_key,
        correlation_id=row.correlation_id,
        input=saga_input,
        data=data,
        output=output,
        error=None if row.error is None else decode_error(row.error),
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=tuple(entry_of(h) for h in history),
        parent_id=_parent_id(row.idempotency_key),
    )


def result_of(run: HeldRun) -> Run:
    """The run as this engine just persisted it (no need to read it back)."""
    snapshot = run.snapshot
    return Run(
        id=run.id,
        saga=run.definition.name,
        version=run.definition.version,
        status=snapshot.status,
        state=snapshot.state,
        key=run.key,
        correlation_id=run.correlation_id,
        input=run.input,
        data=snapshot.data,
        output=run.output if snapshot.status is Status.COMPLETED else None,
        error=snapshot.error,
        created_at=run.created_at,
        updated_at=run.updated_at,
        parent_id=_parent_id(run.idempotency_key),
    )


def _parent_id(key: str | None) -> str | None:
    parent = parent_of(key)
    return None if parent is None else parent[0]


def _error_column(record: Record) -> dict[str, Any] | None:
    """What a record keeps in the history's JSON ``error`` column.

    An operator's record has no error: it keeps its note, who acted and the
    linked run there instead (its kind tells the two apart).
    """
    if record.kind.by_operator:
        return {"note": record.note, "by": record.by, "link": record.link}
    if record.error is None and record.link is not None:
        return {"link": record.link}  # a wait for a child run: the child's id
    return None if record.error is None else encode_error(record.error)


def entry_of(row: HistoryRow) -> HistoryEntry:
    """A history row as the public ``HistoryEntry``."""
    kind = HistoryKind(row.kind)
    linked = row.error is not None and set(row.error) == {"link"}  # a wait for a child run
    said: dict[str, Any] = (row.error or {}) if kind.by_operator or linked else {}
    return HistoryEntry(
        kind=kind,
        from_state=row.from_state,
        to_state=row.to_state,
        transition=row.transition,
        step=row.step,
        attempt=row.attempt,
        event=row.event,
        error=None if row.error is None or kind.by_operator or linked else decode_error(row.error),
        version=row.version,
        epoch=row.epoch,
        started_at=row.started_at,
        finished_at=row.finished_at,
        note=said.get("note"),
        by=said.get("by"),
        link=said.get("link"),
    )


def operator_row(row: InstanceRow, record: Record, now: float) -> HistoryRow:
    """An operator's record appended to a stored run without changing it (a fork's link)."""
    return HistoryRow(
        instance_id=row.id,
        version=row.version,
        kind=record.kind.value,
        transition=record.transition,
        step=None,
        from_state=record.from_state,
        to_state=record.to_state,
        attempt=record.attempt,
        event=record.event,
        error=_error_column(record),
        epoch=row.epoch,
        correlation_id=row.correlation_id,
        started_at=now,
        finished_at=now,
    )


def record_of(row: HistoryRow) -> Record:
    """A history row as the core's ``Record`` (what a fork's rules read)."""
    entry = entry_of(row)
    return Record(
        entry.kind,
        entry.from_state,
        entry.to_state,
        entry.transition,
        entry.attempt,
        entry.error,
        entry.event,
        note=entry.note,
        by=entry.by,
        link=entry.link,
    )


def inbox_entry_of(row: InboxRow) -> InboxEntry:
    """An inbox row as the public ``InboxEntry``."""
    return InboxEntry(
        event_id=row.event_id,
        kind=row.kind,
        event=row.event,
        payload=row.payload,
        status=DeliveryStatus(row.status),
        reason=row.reason,
        received_at=row.received_at,
        settled_at=row.settled_at,
    )


def payload_of(definition: Definition, snapshot: Snapshot, entry: InboxRow) -> Any:
    """An inbox entry's payload, structured into the type its transition from here declares."""
    assert entry.event is not None
    t = definition.events_from.get(snapshot.state, {}).get(entry.event)
    if t is None or t.payload_type is None or entry.payload is None:
        return entry.payload
    return converter.structure(entry.payload, t.payload_type)
