"""What a step, compensation or guard receives."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, cast

import attrs

from statesaga.errors import MissingResource

__all__ = ["Resources", "StepContext"]

InputT = TypeVar("InputT")
DataT = TypeVar("DataT")
T = TypeVar("T")


class Resources:
    """The objects an engine hands its steps: a payment client, an HTTP session...

    Steps are plain functions declared on the saga class; what they need from
    the outside world is passed to the engine (``Engine(..., resources=[...])``)
    and looked up by type from the step, so a test or a worker can give the same
    saga a different payment provider without touching its definition.

    >>> class Payments: ...
    >>> resources = Resources([Payments()])
    >>> isinstance(resources.get(Payments), Payments)
    True
    >>> resources.get(int)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    statesaga.errors.MissingResource: a step asked for an int, but the engine has none: ...
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[object] = ()) -> None:
        self._items = tuple(items)

    # ``kind`` is typed as a callable, not ``type[T]``, so that an abstract class or a
    # Protocol (what a resource usually is) type-checks: mypy refuses those as type[T]
    def get(self, kind: Callable[..., T]) -> T:
        """The first resource that is an instance of ``kind`` (a class).

        Raises:
            MissingResource: the engine was given none (a non-retryable step failure).
        """
        if not isinstance(kind, type):
            raise TypeError(f"resources are looked up by class; {kind!r} is not one")
        for item in self._items:
            if isinstance(item, kind):
                return cast("T", item)
        article = "an" if kind.__name__[:1].lower() in "aeiou" else "a"
        raise MissingResource(
            f"a step asked for {article} {kind.__name__}, but the engine has none: "
            "pass one as Engine(..., resources=[...])",
            resource=kind.__name__,
        )

    def __iter__(self) -> Any:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Resources({list(self._items)!r})"


_NO_RESOURCES = Resources()


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
        connection: for a ``transactional`` step (and its compensation), the
            transition's own database connection (a SQLAlchemy ``Connection``);
            writes made through it commit or roll back together with the transition.
        resources: what the engine was given as ``resources``; see :meth:`resource`.

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
    resources: Resources = _NO_RESOURCES

    def resource(self, kind: Callable[..., T]) -> T:
        """The engine's resource of type ``kind`` (e.g. ``ctx.resource(PaymentProvider)``).

        Raises:
            MissingResource: the engine was given none; the step fails without retrying.
        """
        return self.resources.get(kind)
