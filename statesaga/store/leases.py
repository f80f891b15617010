"""Claims and leases (SQLAlchemy Core): take a run, keep it, let it go.

Every claim bumps the run's epoch (the fencing token); renewing and
releasing match on the epoch, so a holder that lost its claim touches
nothing. :class:`~statesaga.store.sql.SqlStore` offers these as its methods.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import sqlalchemy as sa

from statesaga.errors import EntityBusy
from statesaga.store import claims as _claims
from statesaga.store.base import InstanceRow
from statesaga.store.dialects import Dialect
from statesaga.store.reads import instance
from statesaga.store.schema import instances
from statesaga.store.writes import fenced

__all__ = ["claim", "claim_due", "extend_lease", "extend_leases", "release_lease"]


def claim(
    engine: sa.Engine, instance_id: str, version: int, owner: str, expires_at: float, now: float
) -> InstanceRow:
    """Take the instance's lease and bump its epoch; the row as it now is."""
    statement = (
        sa.update(instances)
        .where(
            instances.c.id == instance_id,
            instances.c.version == version,
            # never the claimant's own live lease: another thread of the same engine
            # may be driving the run under it
            sa.or_(
                instances.c.lease_owner.is_(None),
                instances.c.lease_expires_at < now,
            ),
        )
        .values(
            epoch=instances.c.epoch + 1,
            version=instances.c.version + 1,
            lease_owner=owner,
            lease_expires_at=expires_at,
            updated_at=now,
        )
    )
    read = sa.select(instances).where(instances.c.id == instance_id)
    with engine.begin() as connection:
        if connection.execute(statement).rowcount == 1:
            return instance(connection.execute(read).one())
        current = connection.execute(read).one_or_none()
    if current is not None and current.version == version:
        raise EntityBusy(
            f"instance {instance_id} is held by {current.lease_owner} until its lease "
            "expires; try again later",
            instance_id=instance_id,
            key=current.entity_key,
        )
    raise fenced(instance_id, version, None)


def extend_lease(engine: sa.Engine, instance_id: str, epoch: int, expires_at: float) -> bool:
    """Push the lease out, unless the epoch moved on (another holder claimed it)."""
    statement = (
        sa.update(instances)
        .where(instances.c.id == instance_id, instances.c.epoch == epoch)
        .values(lease_expires_at=expires_at)
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount == 1)


def extend_leases(
    engine: sa.Engine, dialect: Dialect, leases: Sequence[tuple[str, int]], expires_at: float
) -> set[str]:
    """Push out many leases at once, in one transaction; the ids whose epoch still matched."""
    if not leases:
        return set()
    with engine.begin() as connection:
        return dialect.renew(connection, leases, expires_at)


def release_lease(engine: sa.Engine, instance_id: str, epoch: int, due_at: float | None) -> bool:
    """Let the lease go without a transition, unless the epoch moved on.

    ``due_at`` is when the run next needs an engine, as the core decided it
    (``due_when_let_go``: the liveness rule).
    """
    c = instances.c
    statement = (
        sa.update(instances)
        .where(c.id == instance_id, c.epoch == epoch)
        .values(lease_owner=None, lease_expires_at=None, due_at=due_at)
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount == 1)


def claim_due(
    engine: sa.Engine,
    dialect: Dialect,
    now: float,
    limit: int,
    owner: str,
    expires_at: float,
    sagas: Sequence[tuple[str, int]] | None = None,
) -> builtins.list[InstanceRow]:
    """Claim up to ``limit`` instances that need work now, in one statement."""
    if sagas is not None and not sagas:
        return []
    statement = _claims.claim_statement(
        now, limit, owner, expires_at, sagas, lock=dialect.lock_claims
    )
    with engine.begin() as connection:
        return [instance(row) for row in connection.execute(statement)]
