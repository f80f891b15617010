"""Entity leases: the ``Locks`` protocol and its implementations.

- :class:`InProcessLocks`: one process (tests, embedded use).
- :class:`SqlLocks`: the store's own database, across processes, no server.
- :class:`RedisLocks` / :class:`AsyncRedisLocks`: Redis (the ``statesaga[redis]`` extra).
- :class:`AdvisoryLocks`: PostgreSQL session advisory locks.

The protocol and the in-process locks import nothing heavy: the SQL and
advisory locks (SQLAlchemy) and the Redis ones (``redis``) are loaded on
first use, so importing this package loads neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statesaga.locks.base import Lease, Locks
from statesaga.locks.memory import InProcessLocks

if TYPE_CHECKING:
    from statesaga.locks.advisory import AdvisoryLocks
    from statesaga.locks.redis import AsyncRedisLocks, RedisLocks
    from statesaga.locks.sql import SqlLocks

__all__ = [
    "AdvisoryLocks",
    "AsyncRedisLocks",
    "InProcessLocks",
    "Lease",
    "Locks",
    "RedisLocks",
    "SqlLocks",
]

# the module each lazily loaded name lives in
_LAZY = {
    "AdvisoryLocks": "statesaga.locks.advisory",
    "SqlLocks": "statesaga.locks.sql",
    "RedisLocks": "statesaga.locks.redis",
    "AsyncRedisLocks": "statesaga.locks.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'statesaga.locks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
