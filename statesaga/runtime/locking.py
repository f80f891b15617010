"""Entity locks as the runtime uses them: one port for ``Engine``, one for ``AsyncEngine``.

A port takes, renews (from the lease keeper's thread) and releases entity
leases with the engine's owner name and lease length. The keeper renews many
leases at once through ``renew_many``: one batch where the locks offer
``renew_many`` (Redis, SQL, in-process), one call per lease otherwise. ``Engine`` only ever
holds synchronous ``Locks``; ``AsyncEngine`` also takes asynchronous ones
(``AsyncRedisLocks``), whose renewals are handed to the event loop and whose
releases are awaited there right after the operation returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Callable, Sequence
from typing import Any, cast

from statesaga.locks.base import AsyncLocks, Lease, Locks
from statesaga.runtime.reporting import log

__all__ = ["AsyncLockPort", "LockPort", "SyncLockPort"]


class SyncLockPort:
    """Synchronous ``Locks`` (or none: the store's row lease is then the only lock)."""

    def __init__(
        self, locks: Locks | None, owner: str, lease_ttl: float, clock: Callable[[], float]
    ) -> None:
        self.locks = locks
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.clock = clock

    def try_acquire(self, key: str) -> Lease | None:
        """The lease on ``key``, or ``None`` if someone else holds it."""
        assert self.locks is not None
        return self.locks.try_acquire(key, self.owner, self.lease_ttl, self.clock())

    def renew(self, lease: Lease, now: float) -> Lease | None:
        """The renewed lease, or ``None`` if it was lost (called from the keeper's thread)."""
        assert self.locks is not None
        return self.locks.renew(lease, self.lease_ttl, now)

    def renew_many(self, leases: Sequence[Lease], now: float) -> list[Lease | None]:
        """Each lease renewed, or ``None`` where it was lost (from the keeper's thread)."""
        assert self.locks is not None
        many = getattr(self.locks, "renew_many", None)
        if many is not None:
            return cast("list[Lease | None]", many(leases, self.lease_ttl, now))
        return _one_by_one(self.locks.renew, leases, self.lease_ttl, now)

    def release(self, lease: Lease) -> None:
        """Let the lease go."""
        if self.locks is not None:
            self.locks.release(lease)


class AsyncLockPort:
    """Synchronous or asynchronous locks, used from an event loop."""

    def __init__(
        self,
        locks: Locks | AsyncLocks | None,
        owner: str,
        lease_ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self.locks = locks
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_releases: set[asyncio.Task[None]] = set()

    async def try_acquire(self, key: str) -> Lease | None:
        """The lease on ``key``, or ``None`` if someone else holds it."""
        locks: Any = self.locks  # Locks, or AsyncRedisLocks and the like
        self._loop = asyncio.get_running_loop()
        result = locks.try_acquire(key, self.owner, self.lease_ttl, self.clock())
        if inspect.isawaitable(result):
            result = await result
        return cast("Lease | None", result)

    def renew(self, lease: Lease, now: float) -> Lease | None:
        """The renewed lease, or ``None``; an async renewal is handed to the loop."""
        locks: Any = self.locks
        result = locks.renew(lease, self.lease_ttl, now)
        if inspect.isawaitable(result):
            result = self._on_loop(result)
        return cast("Lease | None", result)

    def renew_many(self, leases: Sequence[Lease], now: float) -> list[Lease | None]:
        """Each lease renewed, or ``None``; an async batch is one coroutine on the loop."""
        locks: Any = self.locks
        many = getattr(locks, "renew_many", None)
        if many is None:
            return _one_by_one(self.renew, leases, None, now)
        result = many(leases, self.lease_ttl, now)
        if inspect.isawaitable(result):
            result = self._on_loop(result)
        return cast("list[Lease | None]", result)

    def _on_loop(self, awaitable: Any) -> Any:
        """Await ``awaitable`` on the engine's loop from the keeper's thread; its answer.

        Waits a third of the ttl (then ``TimeoutError``: still under way). A loop
        that is closed, or ended with it unanswered (the engine stopped during a
        round), raises ``RuntimeError`` and leaves no coroutine unawaited.
        """
        assert self._loop is not None
        wrapper = _awaited(awaitable)
        try:
            future = asyncio.run_coroutine_threadsafe(wrapper, self._loop)
        except RuntimeError:  # the loop is closed
            wrapper.close()
            _close(awaitable)
            raise
        try:
            return future.result(timeout=self.lease_ttl / 3)
        except concurrent.futures.CancelledError:  # the loop ended before answering it
            _close(awaitable)  # (a coroutine never started would warn when collected)
            raise RuntimeError("the event loop ended before the renewal ran") from None

    def release(self, lease: Lease) -> None:
        """Let the lease go; an async release runs on the loop right after the operation."""
        locks: Any = self.locks
        if locks is None:
            return
        result = locks.release(lease)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(_awaited(result))
            self._pending_releases.add(task)
            task.add_done_callback(self._pending_releases.discard)


LockPort = SyncLockPort | AsyncLockPort


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _close(awaitable: Any) -> None:
    """Close a coroutine that will never run (a no-op for one that ran or is not one)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def _one_by_one(
    renew: Callable[..., Lease | None], leases: Sequence[Lease], ttl: float | None, now: float
) -> list[Lease | None]:
    """Locks without ``renew_many``: one call per lease; a failed call loses that lease."""
    renewed: list[Lease | None] = []
    for lease in leases:
        try:
            renewed.append(renew(lease, now) if ttl is None else renew(lease, ttl, now))
        except Exception:
            log.exception("renewing the lock on %s failed", lease.key)
            renewed.append(None)
    return renewed
