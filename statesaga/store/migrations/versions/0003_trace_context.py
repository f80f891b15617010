"""The trace context a run was started in.

``statesaga_instances.trace_context`` keeps the W3C trace context
(``traceparent``, then ``;tracestate`` if any) of the span that started a run,
so that a worker that resumes the run later (a retry, a timeout, an event)
traces its steps in the same trace. Runs started before, or without tracing,
have none.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("statesaga_instances", sa.Column("trace_context", sa.String(1000), nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) and PostgreSQL both drop a column in place
    op.drop_column("statesaga_instances", "trace_context")
