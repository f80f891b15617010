"""The store's tables, as SQLAlchemy Core.

Times are epoch seconds (floats): portable across SQLite and PostgreSQL,
cheap to compare, and what the interpreter works in. JSON columns hold the
cattrs-unstructured input, context, output, error and machine state; they
become JSONB on PostgreSQL.

The alembic migrations in ``statesaga/store/migrations`` create exactly these
tables; a test compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from statesaga.core import OPEN_STATUSES

__all__ = [
    "INBOX_ACCEPTED",
    "INBOX_PENDING",
    "INBOX_REJECTED",
    "OPEN_STATUSES",
    "TRACE_CONTEXT_LENGTH",
    "history",
    "inbox",
    "instances",
    "locks",
    "metadata",
]

metadata = sa.MetaData()

#: the longest trace context stored with a run (a longer ``tracestate`` is left out)
TRACE_CONTEXT_LENGTH = 1000

JsonText = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# the open statuses (the core's): the unique index below holds for these only
_OPEN_SQL = f"status IN ({', '.join(repr(status) for status in OPEN_STATUSES)})"

instances = sa.Table(
    "statesaga_instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("saga", sa.String(200), nullable=False),
    sa.Column("saga_version", sa.Integer, nullable=False),
    sa.Column("graph_hash", sa.String(32), nullable=False),
    sa.Column("entity_key", sa.String(500), nullable=True),
    sa.Column("idempotency_key", sa.String(500), nullable=True),
    sa.Column("correlation_id", sa.String(200), nullable=False),
    sa.Column("state", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("input", JsonText, nullable=True),
    sa.Column("context", JsonText, nullable=True),
    sa.Column("output", JsonText, nullable=True),
    sa.Column("machine", JsonText, nullable=False),
    sa.Column("error", JsonText, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("due_at", sa.Float, nullable=True),
    sa.Column("deadline", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the W3C trace context of the span that started the run (``traceparent``, then
    # ``;tracestate`` when there is one), so that later drives join the run's trace
    sa.Column("trace_context", sa.String(TRACE_CONTEXT_LENGTH), nullable=True),
    # at most one open instance per (saga, entity key): the correctness guard behind the locks
    sa.Index(
        "uq_statesaga_open_entity",
        "saga",
        "entity_key",
        unique=True,
        sqlite_where=sa.text(_OPEN_SQL),
        postgresql_where=sa.text(_OPEN_SQL),
    ),
    sa.Index("uq_statesaga_idempotency", "saga", "idempotency_key", unique=True),
    sa.Index("ix_statesaga_work", "status", "due_at"),
    # what claims look at: released runs by due time, leased runs by lease expiry
    sa.Index(
        "ix_statesaga_due",
        "due_at",
        sqlite_where=sa.text("lease_owner IS NULL AND due_at IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NULL AND due_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_statesaga_leased",
        "lease_expires_at",
        sqlite_where=sa.text("lease_owner IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    ),
    sa.Index("ix_statesaga_correlation", "correlation_id"),
)

history = sa.Table(
    "statesaga_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "instance_id",
        sa.String(64),
        sa.ForeignKey("statesaga_instances.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("transition", sa.String(200), nullable=True),
    sa.Column("step", sa.String(300), nullable=True),
    sa.Column("from_state", sa.String(200), nullable=False),
    sa.Column("to_state", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("event", sa.String(200), nullable=True),
    sa.Column("error", JsonText, nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("correlation_id", sa.String(200), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Index("ix_statesaga_history_instance", "instance_id", "id"),
)

locks = sa.Table(
    "statesaga_locks",
    metadata,
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

#: what became of an event or cancel in the inbox
INBOX_PENDING, INBOX_ACCEPTED, INBOX_REJECTED = "pending", "accepted", "rejected"

# events and cancels sent to a run: recorded here first (deduplicated by event id), in one
# short transaction whoever holds the run, then consumed by whoever can drive it
inbox = sa.Table(
    "statesaga_inbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "instance_id",
        sa.String(64),
        sa.ForeignKey("statesaga_instances.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("event", sa.String(200), nullable=True),
    sa.Column("payload", JsonText, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(1000), nullable=True),
    sa.Column("correlation_id", sa.String(200), nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("settled_at", sa.Float, nullable=True),
    sa.UniqueConstraint("instance_id", "event_id", name="uq_statesaga_inbox_event"),
    sa.Index(
        "ix_statesaga_inbox_pending",
        "instance_id",
        "id",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)
