"""The event inbox over SQLAlchemy Core: record, read, settle.

Sending an event (or a cancel) is one short INSERT, whoever holds the run;
the entry is unique per (run, event id), so a duplicate delivery finds the
first one instead of adding another. Whoever drives the run next reads its
pending entries and settles them in the transition that applies them.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from statesaga.store.base import InboxRow, Settle
from statesaga.store.dialects import reading
from statesaga.store.schema import INBOX_PENDING, inbox

__all__ = ["pending_exists", "read_entry", "read_inbox", "receive", "settle"]


def receive(engine: sa.Engine, entry: InboxRow) -> tuple[InboxRow, bool]:
    """Insert ``entry``; if its event id is taken for that run, the stored one instead."""
    values = {
        field: getattr(entry, field)
        for field in (
            "instance_id",
            "event_id",
            "kind",
            "event",
            "payload",
            "status",
            "reason",
            "correlation_id",
            "received_at",
            "settled_at",
        )
    }
    try:
        with engine.begin() as connection:
            new_id = connection.execute(sa.insert(inbox).values(**values)).inserted_primary_key
    except sa.exc.IntegrityError:
        existing = read_entry(engine, entry.instance_id, entry.event_id)
        if existing is None:  # not a duplicate: the run itself is gone (foreign key)
            raise
        return existing, True
    assert new_id is not None
    return InboxRow(**{**values, "id": new_id[0]}), False


def read_inbox(
    engine: sa.Engine,
    instance_id: str,
    *,
    only_pending: bool = False,
    connection: sa.Connection | None = None,
) -> builtins.list[InboxRow]:
    """The run's inbox entries, oldest first (only the pending ones if asked).

    Read through ``connection`` if given (a transaction the caller is in), else
    through a reading connection of its own.
    """
    query = sa.select(inbox).where(inbox.c.instance_id == instance_id)
    if only_pending:
        query = query.where(inbox.c.status == INBOX_PENDING)
    query = query.order_by(inbox.c.id)
    if connection is not None:
        return [InboxRow(**row._asdict()) for row in connection.execute(query)]
    with reading(engine) as own:
        return [InboxRow(**row._asdict()) for row in own.execute(query)]


def read_entry(engine: sa.Engine, instance_id: str, event_id: str) -> InboxRow | None:
    """The entry with ``event_id`` in the run's inbox."""
    query = sa.select(inbox).where(inbox.c.instance_id == instance_id, inbox.c.event_id == event_id)
    with reading(engine) as connection:
        row = connection.execute(query).one_or_none()
    return None if row is None else InboxRow(**row._asdict())


def settle(execute: Any, mark: str, settles: Sequence[Settle]) -> None:
    """Mark inbox entries consumed through a DBAPI cursor's ``execute``."""
    sql = (
        f"UPDATE statesaga_inbox SET status = {mark}, reason = {mark}, settled_at = {mark} "
        f"WHERE id = {mark} AND status = 'pending'"
    )
    for entry in settles:
        execute(sql, (entry.status, entry.reason, entry.settled_at, entry.id))


def pending_exists(instance_id_column: Any) -> sa.Exists:
    """``EXISTS`` a pending inbox entry for the run in ``instance_id_column``."""
    return (
        sa.select(inbox.c.id)
        .where(inbox.c.instance_id == instance_id_column, inbox.c.status == INBOX_PENDING)
        .exists()
    )
