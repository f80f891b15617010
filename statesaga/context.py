"""What a step, compensation or guard receives."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs

__all__ = ["StepContext"]

InputT = TypeVar("InputT")
DataT = TypeVar("DataT")


@attrs.frozen
class StepContext(Generic[InputT, DataT]):
    """The typed context a step, compensation or guard is called with.

    A step returns the new context data (or ``None`` to keep it as it is);
    the runtime persists what it returns with the transition.

    Attributes:
        input: the saga's input, as given to ``start``.
        data: the saga's context data as of this step (for a compensation:
            as recorded by the steps that ran, including the one being undone).
        instance_id: the instance this step belongs to.
        saga: the saga's name.
        step: the step's name (the transition's name, or ``<name>.undo`` for a compensation).
        attempt: 1 on the first try, 2 on the first retry, and so on.
        idempotency_key: stable for this step of this instance, the same on every
            attempt and after recovery; pass it to external services so they
            deduplicate retries.
        correlation_id: the run's correlation id, for logs and outgoing calls.
        event: the payload of the event that triggered this transition, if any.
        connection: for a ``transactional`` step, the transition's own database
            connection (a SQLAlchemy ``Connection``); writes made through it
            commit or roll back together with the transition.

    >>> ctx = StepContext(input=1, data=None, instance_id="i-1", saga="s", step="go",
    ...                   attempt=1, idempotency_key="i-1:1:go", correlation_id="c-1")
    >>> ctx.idempotency_key
    'i-1:1:go'
    """

    input: InputT
    data: DataT
    instance_id: str
    saga: str
    step: str
    attempt: int
    idempotency_key: str
    correlation_id: str
    event: Any = None
    connection: Any = None
