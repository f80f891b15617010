"""statesaga: durable sagas as declarative finite-state machines.

Declare a workflow as a ``Saga`` class of ``State`` attributes and transitions
that run steps with compensations; an engine runs it, persisting every
transition, locking per entity, retrying, timing out, recovering after
crashes and compensating in reverse on failure.

>>> import statesaga
>>> statesaga.Status.COMPENSATED.is_terminal
True
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from statesaga.context import Resources, StepContext
from statesaga.core import ErrorInfo, ErrorKind, HistoryKind, Status
from statesaga.definition import Definition
from statesaga.delivery import Delivery
from statesaga.dsl import Event, Saga, State, Transition
from statesaga.errors import (
    CancelNotAllowed,
    ConcurrencyError,
    ConnectionLost,
    DefinitionError,
    DuplicateStart,
    EngineOverloaded,
    EntityBusy,
    EventNotAllowed,
    FencedOut,
    ForkNotAllowed,
    InputError,
    InstanceNotFound,
    InvalidOperation,
    LeaseLost,
    LocksUnavailable,
    MissingResource,
    NonRetryableError,
    NotFound,
    PayloadTooLarge,
    ResolveNotAllowed,
    RetryNotAllowed,
    SagaNotRegistered,
    SettingsError,
    StateSagaError,
    StepTimeout,
    StoreBusy,
    StoreError,
)
from statesaga.migration import Migration, MigrationEntry, MigrationReport
from statesaga.parallel import Branch
from statesaga.retry import Retry
from statesaga.run import DeliveryStatus, HistoryEntry, InboxEntry, Run

if TYPE_CHECKING:
    from statesaga.aio import AsyncEngine
    from statesaga.engine import Engine
    from statesaga.locks import InProcessLocks, SqlLocks

__version__ = "0.1.0"

# a library logs, the application decides where it goes
logging.getLogger("statesaga").addHandler(logging.NullHandler())

__all__ = [
    # running
    "Engine",
    "AsyncEngine",
    "Run",
    "HistoryEntry",
    "Delivery",
    "DeliveryStatus",
    "InboxEntry",
    "InProcessLocks",
    "SqlLocks",
    # declaring
    "Saga",
    "State",
    "Transition",
    "Branch",
    "Event",
    "Retry",
    "StepContext",
    "Resources",
    "Definition",
    "Migration",
    # migrating runs
    "MigrationReport",
    "MigrationEntry",
    # state of a run
    "Status",
    "HistoryKind",
    "ErrorInfo",
    "ErrorKind",
    # errors
    "StateSagaError",
    "DefinitionError",
    "DuplicateStart",
    "InputError",
    "NotFound",
    "PayloadTooLarge",
    "SagaNotRegistered",
    "InstanceNotFound",
    "InvalidOperation",
    "EventNotAllowed",
    "CancelNotAllowed",
    "RetryNotAllowed",
    "ResolveNotAllowed",
    "ForkNotAllowed",
    "ConcurrencyError",
    "EntityBusy",
    "FencedOut",
    "LeaseLost",
    "EngineOverloaded",
    "StoreBusy",
    "StoreError",
    "ConnectionLost",
    "LocksUnavailable",
    "MissingResource",
    "SettingsError",
    "StepTimeout",
    "NonRetryableError",
]

# the engines pull in SQLAlchemy: load them on first use, so that declaring
# and validating sagas stays light
_LAZY = {
    "Engine": "statesaga.engine",
    "AsyncEngine": "statesaga.aio",
    "InProcessLocks": "statesaga.locks",
    "SqlLocks": "statesaga.locks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'statesaga' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
