"""Schema migrations: alembic, behind two functions.

``ensure_schema`` checks the store's revision cheaply (one query) and only
imports alembic when there is something to do.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from statesaga.errors import StoreError
from statesaga.store.dialects import reading

__all__ = ["HEAD", "current_revision", "ensure_schema", "upgrade"]

#: the newest migration; a test checks it against the migration scripts
HEAD = "0003"

MIGRATIONS = Path(__file__).parent / "migrations"


def current_revision(engine: sa.Engine, schema: str | None = None) -> str | None:
    """The store's alembic revision, or ``None`` for an empty database.

    A read (on SQLite it takes no write lock): opening a store does not wait
    for another process's writer. With ``schema`` (a store in a PostgreSQL
    schema of its own) the revision is that schema's, never one found further
    along the search path (another store's, in ``public``).
    """
    with reading(engine) as connection:
        if not sa.inspect(connection).has_table("alembic_version", schema=schema):
            return None
        table = "alembic_version" if schema is None else f"{schema}.alembic_version"
        return connection.execute(sa.text(f"SELECT version_num FROM {table}")).scalar()


def upgrade(engine: sa.Engine, revision: str = "head", schema: str | None = None) -> None:
    """Apply the migrations up to ``revision`` (the newest by default), in ``schema``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["version_table_schema"] = schema
        command.upgrade(config, revision)


def ensure_schema(engine: sa.Engine, *, upgrade: bool, schema: str | None = None) -> None:
    """Make sure the store's schema is current, migrating it when ``upgrade`` is true."""
    if current_revision(engine, schema) == HEAD:
        return
    if not upgrade:
        raise StoreError(
            f"the store at {engine.url.render_as_string(hide_password=True)} has no current "
            "statesaga schema; run `statesaga db upgrade --db URL` first"
        )
    globals()["upgrade"](engine, schema=schema)
