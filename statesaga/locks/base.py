"""The ``Locks`` protocol: leases on entity keys.

A lease keeps a second run off an entity (``cart:complete:42``) while one is
working on it, so concurrent requests fail fast with ``EntityBusy``. It is an
efficiency aid, not the correctness guard: the store's unique index (one open
instance per key) and the epoch compare-and-set on every transition are.
"""

from __future__ import annotations

from typing import Protocol

import attrs

__all__ = ["AsyncLocks", "Lease", "Locks"]


@attrs.frozen
class Lease:
    """A held lease: who holds which key, with which token, until when."""

    key: str
    owner: str
    token: str
    expires_at: float


class Locks(Protocol):
    """Leases on entity keys. Implementations: in-process, SQL (the store's own database).

    An implementation may also offer ``renew_many(leases, ttl, now)``, returning
    each lease renewed (or ``None`` where it was lost), in the order given: the
    lease keeper then renews all the leases due in a round in one batch instead
    of one call each. ``InProcessLocks``, ``SqlLocks`` and the Redis locks do.
    """

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        """Take the lease on ``key`` for ``ttl`` seconds, or ``None`` if someone holds it."""

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        """Extend a held lease; ``None`` if it was lost (expired and taken, or deleted)."""

    def release(self, lease: Lease) -> None:
        """Give the lease up (no error if it was already lost)."""


class AsyncLocks(Protocol):
    """The asynchronous shape of :class:`Locks` (``AsyncRedisLocks``), for ``AsyncEngine``."""

    async def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        """Take the lease on ``key`` for ``ttl`` seconds, or ``None`` if someone holds it."""

    async def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        """Extend a held lease; ``None`` if it was lost."""

    async def release(self, lease: Lease) -> None:
        """Give the lease up (no error if it was already lost)."""
