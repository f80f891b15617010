"""Reading runs typed by their saga: the bodies of the engines' ``get(saga=...)`` and
``list(saga=...)``, shared by ``Engine`` and ``AsyncEngine``.

A run read by id alone is a ``Run[Any, Any, Any]``. Given the saga class, the
engine registers it (so the run's input and data are structured into its
types) and checks that the run is one of that saga's version: a run typed as
``Run[Cart, Checkout]`` that held another saga's data would be a lie to mypy.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from statesaga.errors import InstanceNotFound

if TYPE_CHECKING:
    from statesaga.run import Run
    from statesaga.runtime import Runtime

__all__ = ["typed_get", "typed_list"]


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
