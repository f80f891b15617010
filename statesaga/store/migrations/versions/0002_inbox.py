"""The event inbox, and due times on every released run.

Events and cancels are recorded in ``statesaga_inbox`` before anything
consumes them. Every run that is not terminal and not leased now carries a
due time (runs released without one were due at once): recovery finds every
run through its lease expiry or its due time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JsonText = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
PENDING = sa.text("status = 'pending'")
RELEASED = sa.text("lease_owner IS NULL AND due_at IS NOT NULL")
LEASED = sa.text("lease_owner IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "statesaga_inbox",
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
    )
    op.create_index(
        "ix_statesaga_inbox_pending",
        "statesaga_inbox",
        ["instance_id", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    # claims look only at released runs that are due and at leased runs whose lease expired
    op.create_index(
        "ix_statesaga_due",
        "statesaga_instances",
        ["due_at"],
        sqlite_where=RELEASED,
        postgresql_where=RELEASED,
    )
    op.create_index(
        "ix_statesaga_leased",
        "statesaga_instances",
        ["lease_expires_at"],
        sqlite_where=LEASED,
        postgresql_where=LEASED,
    )
    # a running or compensating run released without a due time was due at once
    op.execute(
        "UPDATE statesaga_instances SET due_at = updated_at WHERE lease_owner IS NULL "
        "AND due_at IS NULL AND status IN ('running', 'compensating')"
    )


def downgrade() -> None:
    op.drop_index("ix_statesaga_leased", "statesaga_instances")
    op.drop_index("ix_statesaga_due", "statesaga_instances")
    op.drop_index("ix_statesaga_inbox_pending", "statesaga_inbox")
    op.drop_table("statesaga_inbox")
