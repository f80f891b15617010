"""Leases held in this process's memory: for one process, tests and embedded use."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

from statesaga.locks.base import Lease

__all__ = ["InProcessLocks"]


class InProcessLocks:
    """Entity leases in a dictionary, safe across threads of one process.

    >>> locks = InProcessLocks()
    >>> lease = locks.try_acquire("cart:1", "me", ttl=30, now=0)
    >>> locks.try_acquire("cart:1", "you", ttl=30, now=1) is None
    True
    >>> locks.release(lease)
    >>> locks.try_acquire("cart:1", "you", ttl=30, now=2) is not None
    True
    """

    def __init__(self) -> None:
        self._held: dict[str, Lease] = {}
        self._mutex = threading.Lock()

    def try_acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | None:
        with self._mutex:
            current = self._held.get(key)
            if current is not None and current.expires_at > now:
                return None
            lease = Lease(key, owner, uuid.uuid4().hex, now + ttl)
            self._held[key] = lease
            return lease

    def renew(self, lease: Lease, ttl: float, now: float) -> Lease | None:
        with self._mutex:
            current = self._held.get(lease.key)
            if current is None or current.token != lease.token:
                return None
            renewed = Lease(lease.key, lease.owner, lease.token, now + ttl)
            self._held[lease.key] = renewed
            return renewed

    def renew_many(self, leases: Sequence[Lease], ttl: float, now: float) -> list[Lease | None]:
        """Each lease renewed, or ``None`` where it was lost."""
        return [self.renew(lease, ttl, now) for lease in leases]

    def release(self, lease: Lease) -> None:
        with self._mutex:
            current = self._held.get(lease.key)
            if current is not None and current.token == lease.token:
                del self._held[lease.key]
