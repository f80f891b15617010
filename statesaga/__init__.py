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

from statesaga.context import StepContext
from statesaga.core import ErrorInfo, HistoryKind, Status
from statesaga.definition import Definition
from statesaga.dsl import Saga, State, Transition
from statesaga.errors import (
    CancelNotAllowed,
    ConcurrencyError,
    DefinitionError,
    EntityBusy,
    EventNotAllowed,
    FencedOut,
    InputError,
    InstanceNotFound,
    InvalidOperation,
    LeaseLost,
    NonRetryableError,
    NotFound,
    RetryNotAllowed,
    SagaNotRegistered,
    StateSagaError,
    StepTimeout,
    StoreError,
)
from statesaga.retry import Retry

__version__ = "0.1.0"

__all__ = [
    # declaring
    "Saga",
    "State",
    "Transition",
    "Retry",
    "StepContext",
    "Definition",
    # state of a run
    "Status",
    "HistoryKind",
    "ErrorInfo",
    # errors
    "StateSagaError",
    "DefinitionError",
    "InputError",
    "NotFound",
    "SagaNotRegistered",
    "InstanceNotFound",
    "InvalidOperation",
    "EventNotAllowed",
    "CancelNotAllowed",
    "RetryNotAllowed",
    "ConcurrencyError",
    "EntityBusy",
    "FencedOut",
    "LeaseLost",
    "StoreError",
    "StepTimeout",
    "NonRetryableError",
]
