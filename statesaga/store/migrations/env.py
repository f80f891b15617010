"""Alembic environment: statesaga passes the connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from statesaga.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - statesaga always passes one
    raise RuntimeError("run statesaga migrations through `statesaga db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    # a store in a schema of its own keeps its revision there, whatever else is on the path
    version_table_schema=context.config.attributes.get("version_table_schema"),
)
with context.begin_transaction():
    context.run_migrations()
