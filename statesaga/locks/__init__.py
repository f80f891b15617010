"""Entity leases: the ``Locks`` protocol, in-process and SQL implementations."""

from statesaga.locks.base import Lease, Locks
from statesaga.locks.memory import InProcessLocks
from statesaga.locks.sql import SqlLocks

__all__ = ["InProcessLocks", "Lease", "Locks", "SqlLocks"]
