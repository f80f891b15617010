"""Retention: delete finished runs, and their history, once they are old enough.

Only ``completed`` and ``compensated`` runs are deleted. ``failed`` runs wait
for a person (``statesaga retry``), and open runs are never touched. Runs go
in batches, one transaction each, so a large backlog never holds long locks.

>>> from statesaga.store.sql import SqlStore
>>> store = SqlStore("sqlite://")
>>> cleanup(store, older_than=30 * 86400)
Cleanup(instances=0, history=0, dry_run=False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs
import sqlalchemy as sa

from statesaga.core import CLOSED_STATUSES
from statesaga.errors import StateSagaError
from statesaga.store.base import Store
from statesaga.store.schema import history, instances

__all__ = ["DELETABLE_STATUSES", "Cleanup", "cleanup"]

log = logging.getLogger("statesaga.retention")

#: the statuses a run may be deleted in: finished, nothing left to do or to look at
DELETABLE_STATUSES = CLOSED_STATUSES


@attrs.frozen
class Cleanup:
    """What a cleanup deleted (or, with ``dry_run``, would delete)."""

    instances: int
    history: int
    dry_run: bool = False


def cleanup(
    store: Store,
    *,
    older_than: float,
    batch: int = 500,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Cleanup:
    """Delete completed and compensated runs whose last transition is ``older_than`` seconds old.

    Args:
        store: a ``SqlStore``.
        older_than: age in seconds (``30 * 86400`` for 30 days); must be positive.
        batch: runs deleted per transaction.
        dry_run: count what would go, delete nothing.
        now: the current time in epoch seconds (default: ``time.time()``).
        progress: called after each batch with (runs so far, runs in all).
    """
    engine = _engine_of(store)
    if not older_than > 0 or batch < 1:
        raise StateSagaError("cleanup needs older_than > 0 seconds and batch >= 1")
    cutoff = (time.time() if now is None else now) - older_than
    old = sa.and_(instances.c.status.in_(DELETABLE_STATUSES), instances.c.updated_at < cutoff)
    with engine.connect() as connection:
        total = connection.execute(sa.select(sa.func.count()).where(old)).scalar_one()
        if dry_run:
            entries = connection.execute(
                sa.select(sa.func.count())
                .select_from(history.join(instances, history.c.instance_id == instances.c.id))
                .where(old)
            ).scalar_one()
            return Cleanup(int(total), int(entries), dry_run=True)
    deleted = entries = 0
    while True:
        with engine.begin() as connection:
            ids = list(
                connection.execute(
                    sa.select(instances.c.id)
                    .where(old)
                    .order_by(instances.c.updated_at, instances.c.id)
                    .limit(batch)
                ).scalars()
            )
            if not ids:
                break
            entries += connection.execute(
                sa.delete(history).where(history.c.instance_id.in_(ids))
            ).rowcount
            # the status check again: a run that was retried meanwhile is not finished
            deleted += connection.execute(
                sa.delete(instances).where(instances.c.id.in_(ids), old)
            ).rowcount
        if progress is not None:
            progress(deleted, max(total, deleted))
    if deleted:
        log.info("deleted %d finished run(s) and %d history row(s)", deleted, entries)
    return Cleanup(deleted, entries)


def _engine_of(store: Store) -> sa.Engine:
    engine = getattr(store, "engine", None)
    if not isinstance(engine, sa.Engine):
        raise StateSagaError(f"{type(store).__name__} has no SQL engine; use a SqlStore")
    return engine
