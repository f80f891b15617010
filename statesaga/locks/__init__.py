"""Entity leases: the ``Locks`` protocol and its implementations.

- :class:`InProcessLocks`: one process (tests, embedded use).
- :class:`SqlLocks`: the store's own database, across processes, no server.
- :class:`RedisLocks` / :class:`AsyncRedisLocks`: Redis (the ``statesaga[redis]`` extra).
- :class:`AdvisoryLocks`: PostgreSQL session advisory locks.

The Redis ones load ``redis`` on first use, so importing this package does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statesaga.locks.advisory import AdvisoryLocks
from statesaga.locks.base import Lease, Locks
from statesaga.locks.memory import InProcessLocks
from statesaga.locks.sql import SqlLocks

if TYPE_CHECKING:
    from statesaga.locks.redis import AsyncRedisLocks, RedisLocks

__all__ = [
    "AdvisoryLocks",
    "AsyncRedisLocks",
    "InProcessLocks",
    "Lease",
    "Locks",
    "RedisLocks",
    "SqlLocks",
]

_LAZY = {"RedisLocks", "AsyncRedisLocks"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'statesaga.locks' has no attribute {name!r}")
    from statesaga.locks import redis

    value = getattr(redis, name)
    globals()[name] = value
    return value
