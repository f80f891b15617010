"""What ``Engine`` and ``AsyncEngine`` share, in small rooms (see docs/architecture.md).

- ``requests``: what the drive loop asks of an engine (``Call``, ``Pause``,
  ``LockOp``, ``Gather``) and the one ``Backoff`` every wait sleeps by;
- ``registry``: the registered sagas, by name and version;
- ``codec``: pure conversions between snapshots, rows, history entries and runs;
- ``held``: a run an engine holds while it works on it;
- ``claims``: starting, claiming and entity locks;
- ``transitions``: one compare-and-set write per transition;
- ``intake`` and ``inbox``: events and cancels, recorded first, then consumed;
- ``drive``: the drive loop over a held run;
- ``leases`` and ``locking``: the lease keeper and the sync/async lock ports;
- ``reporting``: log lines and observer calls;
- ``recovery``: the public recovery API ``Worker`` uses;
- ``migration``: moving runs of an older version onto a newer one (``Engine.migrate``);
- ``runtime``: the ``Runtime`` an engine holds, and its operations;
- ``engine_base``: what both engines expose of the runtime they hold.
"""

from statesaga.runtime.recovery import RECOVERY_BATCH, Recovery
from statesaga.runtime.reporting import log
from statesaga.runtime.requests import (
    Call,
    Driver,
    Gather,
    LockOp,
    Pause,
    Request,
    Response,
    SagaRef,
    Transact,
)
from statesaga.runtime.runtime import Runtime

__all__ = [
    "RECOVERY_BATCH",
    "Call",
    "Driver",
    "Gather",
    "LockOp",
    "Pause",
    "Recovery",
    "Request",
    "Response",
    "Runtime",
    "SagaRef",
    "Transact",
    "log",
]
