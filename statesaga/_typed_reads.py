"""Reading runs typed by their saga: ``get``, ``list`` and ``children``, the reads
``Engine`` and ``AsyncEngine`` share (``EngineReads``, the base of both).

A run read by id alone is a ``Run[Any, Any, Any]``. Given the saga class, the
engine registers it (so the run's input and data are structured into its
types) and checks that the run is one of that saga's version: a run typed as
``Run[Cart, Checkout]`` that held another saga's data would be a lie to mypy.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, overload

from statesaga.errors import InstanceNotFound
from statesaga.runtime.engine_base import EngineBase

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from statesaga.core import Status
    from statesaga.dsl import Saga
    from statesaga.run import Run
    from statesaga.runtime import Runtime

    I = TypeVar("I")  # noqa: E741 - the saga's input type, as in Saga[I, D, O]
    D = TypeVar("D")
    O = TypeVar("O")  # noqa: E741

__all__ = ["EngineReads", "typed_get", "typed_list"]


class EngineReads(EngineBase):
    """The reads both engines offer, plain calls on either (they never wait on a run)."""

    @overload
    def get(self, instance_id: str) -> Run[Any, Any, Any]: ...

    @overload
    def get(self, instance_id: str, *, saga: type[Saga[I, D, O]]) -> Run[I, D, O]: ...

    def get(self, instance_id: str, *, saga: type | None = None) -> Run[Any, Any, Any]:
        """The run with that id, with its history; typed as a run of ``saga`` if given.

        Raises:
            InstanceNotFound: no such run, or (with ``saga``) it runs another saga.
        """
        return typed_get(self.runtime, instance_id, saga)

    def children(self, instance_id: str) -> builtins.list[Run[Any, Any, Any]]:
        """The child runs of a run's child steps, oldest first (``[]``: it has none).

        Each child's ``parent_id`` is this run's id; they share its correlation id.

        Raises:
            InstanceNotFound: no such run.
        """
        return self.runtime.reads.children(instance_id)

    @overload
    def list(
        self,
        *,
        saga: str | None = None,
        status: Status | str | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> builtins.list[Run[Any, Any, Any]]: ...

    @overload
    def list(
        self,
        *,
        saga: type[Saga[I, D, O]],
        status: Status | str | None = None,
        key: str | None = None,
        correlation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> builtins.list[Run[I, D, O]]: ...

    def list(self, *, saga: type | str | None = None, **filters: Any) -> builtins.list[Run]:
        """Runs matching every filter given, newest first (without their history).

        ``saga`` is a saga's name, or its class: then only runs of that class's
        version are listed, typed as its runs. ``status``, ``key``,
        ``correlation_id``, ``since`` and ``until`` (epoch seconds, when the
        runs were started) narrow the list; ``limit`` bounds it (default 100).
        """
        return typed_list(self.runtime, saga, filters)


def typed_get(runtime: Runtime, instance_id: str, saga: type | None) -> Run:
    """``runtime.reads.get(instance_id)``, checked to be a run of ``saga`` when given."""
    if saga is None:
        return runtime.reads.get(instance_id)
    definition, _ = runtime.registry.resolve(saga)
    run = runtime.reads.get(instance_id)
    if (run.saga, run.version) != definition.key:
        raise InstanceNotFound(
            f"instance {instance_id} runs saga {run.saga!r} version {run.version}, not "
            f"{definition.name!r} version {definition.version}; pass its own saga class, "
            "or none to read it untyped",
            saga=definition.name,
            instance_id=instance_id,
        )
    return run


def typed_list(
    runtime: Runtime, saga: type | str | None, filters: dict[str, Any]
) -> builtins.list[Run]:
    """``runtime.reads.list(...)``; given a saga class, only the runs of its version."""
    if saga is None or isinstance(saga, str):
        return runtime.reads.list(saga=saga, **filters)
    definition, _ = runtime.registry.resolve(saga)
    runs = runtime.reads.list(saga=definition.name, **filters)
    return [run for run in runs if run.version == definition.version]
