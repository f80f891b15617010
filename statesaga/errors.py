"""Every error statesaga raises, under one root.

::

    StateSagaError
    ├── DefinitionError          a saga definition is malformed (raised when the class is created)
    ├── InputError               input, context or an event payload could not be structured
    │   └── PayloadTooLarge      its JSON is over ``max_payload_bytes``
    ├── NotFound
    │   ├── SagaNotRegistered    no saga with that name/version is registered with the engine
    │   └── InstanceNotFound     no instance with that id or entity key
    ├── InvalidOperation
    │   ├── EventNotAllowed      the instance's current state does not accept that event
    │   ├── CancelNotAllowed     the instance is terminal or already past its pivot
    │   ├── RetryNotAllowed      only a ``failed`` instance can be retried
    │   ├── ResolveNotAllowed    only a ``failed`` run can be resolved, as compensated or completed
    │   ├── ForkNotAllowed       the run cannot be forked from that step (open, pivot, undone)
    │   └── DuplicateStart       an idempotency key was reused with a different input
    ├── ConcurrencyError
    │   ├── EntityBusy           another run holds the entity key (lease or open instance)
    │   ├── FencedOut            this holder's claim was superseded; its write was rejected
    │   ├── LeaseLost            the lease expired or was taken while work was running
    │   └── EngineOverloaded     the engine holds all the runs it can (``max_in_flight``)
    ├── StoreError               the store could not be used (schema missing, unreachable)
    │   ├── StoreBusy            SQLite stayed locked by another writer past the busy timeout
    │   └── ConnectionLost       the database connection died mid-transaction (not committed)
    ├── LocksUnavailable         the entity-lock service (Redis, PostgreSQL) cannot be reached
    ├── SettingsError            a setting (argument, STATESAGA_* variable, TOML) does not fit
    ├── StepTimeout              a step ran longer than its timeout (recorded, then retried)
    └── NonRetryableError        raise it (or a subclass) from a step to fail without retrying
        └── MissingResource      a step asked for a resource the engine was not given

Each error keeps its context as keyword-only attributes (``saga``,
``instance_id``, ``state``, ``key``...), and its message says what to do.

>>> try:
...     raise EntityBusy("cart:complete:42 is busy", key="cart:complete:42")
... except ConcurrencyError as error:
...     error.key
'cart:complete:42'
"""

from __future__ import annotations

__all__ = [
    "CancelNotAllowed",
    "ConcurrencyError",
    "ConnectionLost",
    "DefinitionError",
    "DuplicateStart",
    "EngineOverloaded",
    "EntityBusy",
    "EventNotAllowed",
    "FencedOut",
    "ForkNotAllowed",
    "InputError",
    "InstanceNotFound",
    "InvalidOperation",
    "LeaseLost",
    "LocksUnavailable",
    "MissingResource",
    "NonRetryableError",
    "NotFound",
    "PayloadTooLarge",
    "ResolveNotAllowed",
    "RetryNotAllowed",
    "SagaNotRegistered",
    "SettingsError",
    "StateSagaError",
    "StepTimeout",
    "StoreBusy",
    "StoreError",
]


class StateSagaError(Exception):
    """Root of every statesaga error.

    Args:
        message: what went wrong and what to do about it.
        saga: the saga name involved, when known.
        instance_id: the instance involved, when known.
        state: the state involved, when known.
        key: the entity key involved, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        saga: str | None = None,
        instance_id: str | None = None,
        state: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.saga = saga
        self.instance_id = instance_id
        self.state = state
        self.key = key


class DefinitionError(StateSagaError):
    """A saga definition is malformed; raised when the ``Saga`` class is created.

    The message names the saga, the state or transition at fault, and the fix.
    ``transition`` holds the transition name when one is at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        saga: str | None = None,
        state: str | None = None,
        transition: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, state=state)
        self.transition = transition


class InputError(StateSagaError, ValueError):
    """Input, context or an event payload could not be structured into its type.

    Nothing was written: a rejected ``start`` or ``send`` leaves the store as it was.
    """


class PayloadTooLarge(InputError):
    """A run's input, context, output or an event payload is over ``max_payload_bytes``.

    A start or send is refused before anything is written; a step whose new
    context is too large fails without retrying (the run compensates).
    ``what`` names the payload (``"input"``, ``"context"``...), ``size`` and
    ``limit`` are bytes of JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        what: str,
        size: int,
        limit: int,
        saga: str | None = None,
        instance_id: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id, state=state)
        self.what = what
        self.size = size
        self.limit = limit


class NotFound(StateSagaError, LookupError):
    """Something asked for does not exist."""


class SagaNotRegistered(NotFound):
    """No saga with that name (and version) is registered with the engine."""


class InstanceNotFound(NotFound):
    """No instance with that id (or open instance with that entity key)."""


class InvalidOperation(StateSagaError):
    """The operation does not fit the instance's current status or state."""


class EventNotAllowed(InvalidOperation):
    """The instance's current state does not accept that event; ``event`` names it."""

    def __init__(
        self,
        message: str,
        *,
        event: str | None = None,
        saga: str | None = None,
        instance_id: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id, state=state)
        self.event = event


class CancelNotAllowed(InvalidOperation):
    """The instance is terminal, or has passed its pivot and can only go forward."""


class RetryNotAllowed(InvalidOperation):
    """Only a ``failed`` instance can be retried."""


class ResolveNotAllowed(InvalidOperation):
    """Only a ``failed`` run can be resolved, as compensated or completed, with a note."""


class ForkNotAllowed(InvalidOperation):
    """The run cannot be forked from that step.

    It still holds its entity key, the step is not one it took, a pivot that
    took effect comes at or after the step, or a step before it was undone.
    ``step`` holds the step asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        saga: str | None = None,
        instance_id: str | None = None,
        state: str | None = None,
        key: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id, state=state, key=key)
        self.step = step


class DuplicateStart(InvalidOperation):
    """An idempotency key was reused for a different saga input; use a new key.

    ``idempotency_key`` is the key; ``instance_id`` the run that holds it.
    """

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str | None = None,
        saga: str | None = None,
        instance_id: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id, key=key)
        self.idempotency_key = idempotency_key


class ConcurrencyError(StateSagaError):
    """Another holder got there first."""


class EntityBusy(ConcurrencyError):
    """Another run holds the entity key; retry later or pass a ``wait`` timeout."""


class FencedOut(ConcurrencyError):
    """This holder's claim was superseded (its epoch is stale); its write was rejected.

    The instance is in the hands of whoever claimed it since; nothing was written.
    """


class LeaseLost(ConcurrencyError):
    """The lease on the entity expired or was taken while work was running."""


class EngineOverloaded(ConcurrencyError):
    """The engine holds as many runs as it can keep leases for; new work is refused.

    Raised by ``start`` (and ``resume``, ``retry``) before anything is written,
    when the engine holds ``max_in_flight`` runs, or when its last round of
    lease renewals was slow; a worker claims fewer runs instead, and an event
    sent meanwhile waits in the inbox. Retry later, or spread the work over
    more processes. ``in_flight`` and ``limit`` hold the count and the bound.
    """

    def __init__(
        self,
        message: str,
        *,
        in_flight: int,
        limit: int | None,
        saga: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id)
        self.in_flight = in_flight
        self.limit = limit


class StoreError(StateSagaError):
    """The store could not be used: its schema is missing or out of date, or it is unreachable."""


class StoreBusy(StoreError):
    """SQLite stayed locked by another writer past the store's ``busy_timeout``.

    Nothing of the write was done. A run it interrupted keeps its last
    persisted transition and is resumed by a worker once its lease lapses (or
    by the next call that drives it); a start or send can be repeated (with
    the same idempotency key or event id).
    """


class ConnectionLost(StoreError):
    """The database connection died in the middle of a transaction, which did not commit.

    The engine tries a transition (or a transactional step) once more on a
    fresh connection before it reports this; a run it interrupts resumes from
    its last persisted transition.
    """


class LocksUnavailable(StateSagaError):
    """The entity-lock service (Redis, or PostgreSQL for advisory locks) cannot be reached.

    Raised within about the lock's connect timeout, before anything is written:
    a start or claim that cannot take its entity lock does not run. The message
    names the server and what to check.
    """


class SettingsError(StateSagaError, ValueError):
    """A setting does not fit: raised when settings are loaded, before anything runs.

    The message names the key, where its value came from (an argument, a
    ``STATESAGA_*`` variable, ``statesaga.toml`` or ``pyproject.toml``) and
    the expected form; ``setting`` holds the key.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class StepTimeout(StateSagaError, TimeoutError):
    """A step or compensation ran longer than its timeout.

    ``step`` names it (``"<transition>.undo"`` for a compensation) and
    ``timeout`` is its timeout in seconds.

    >>> StepTimeout("charge ran longer than 10s", step="charge", timeout=10.0).step
    'charge'
    """

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        timeout: float | None = None,
        saga: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(message, saga=saga, instance_id=instance_id)
        self.step = step
        self.timeout = timeout


class NonRetryableError(StateSagaError):
    """Raise this (or a subclass) from a step to fail at once, without retries.

    Business errors such as "insufficient stock" or "payment declined" are
    non-retryable: retrying cannot make them succeed, so the saga
    compensates straight away.

    >>> class PaymentDeclined(NonRetryableError):
    ...     pass
    >>> issubclass(PaymentDeclined, StateSagaError)
    True
    """


class MissingResource(NonRetryableError):
    """A step asked (``ctx.resource(Kind)``) for a resource the engine was not given.

    Pass it when the engine is made: ``Engine(..., resources=[provider])``.
    ``resource`` names the kind that was asked for.
    """

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        super().__init__(message)
        self.resource = resource
