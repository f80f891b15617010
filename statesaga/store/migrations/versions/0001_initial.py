"""The initial schema: instances, history and entity locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JsonText = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OPEN = sa.text("status IN ('running', 'waiting', 'compensating', 'failed')")


def upgrade() -> None:
    op.create_table(
        "statesaga_instances",
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
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
        sa.Column("due_at", sa.Float, nullable=True),
        sa.Column("deadline", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index(
        "uq_statesaga_open_entity",
        "statesaga_instances",
        ["saga", "entity_key"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(
        "uq_statesaga_idempotency", "statesaga_instances", ["saga", "idempotency_key"], unique=True
    )
    op.create_index("ix_statesaga_work", "statesaga_instances", ["status", "due_at"])
    op.create_index("ix_statesaga_correlation", "statesaga_instances", ["correlation_id"])
    op.create_table(
        "statesaga_history",
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
    )
    op.create_index("ix_statesaga_history_instance", "statesaga_history", ["instance_id", "id"])
    op.create_table(
        "statesaga_locks",
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("statesaga_locks")
    op.drop_index("ix_statesaga_history_instance", "statesaga_history")
    op.drop_table("statesaga_history")
    op.drop_index("ix_statesaga_correlation", "statesaga_instances")
    op.drop_index("ix_statesaga_work", "statesaga_instances")
    op.drop_index("uq_statesaga_idempotency", "statesaga_instances")
    op.drop_index("uq_statesaga_open_entity", "statesaga_instances")
    op.drop_table("statesaga_instances")
