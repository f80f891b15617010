"""The sagas an engine drives: registered by (name, version), each with its interpreter.

>>> from statesaga import Saga, State
>>> class Hello(Saga[dict, dict]):
...     name = "hello"
...     new = State(initial=True)
...     done = State(final=True)
...     go = new.to(done).run(lambda ctx: None, read_only=True)
>>> registry = Registry()
>>> registry.register(Hello)
>>> registry.resolve("hello")[0].key
('hello', 1)
"""

from __future__ import annotations

import attrs

from statesaga.core import Interpreter
from statesaga.definition import Definition, children_of
from statesaga.errors import SagaNotRegistered, StateSagaError
from statesaga.retry import Retry
from statesaga.runtime.requests import SagaRef
from statesaga.store.base import InstanceRow

__all__ = ["Registry", "definition_of"]


class Registry:
    """Registered definitions (several versions of a saga may coexist), newest by name.

    ``default_retry`` is the policy of every step that declared none.
    """

    def __init__(self, default_retry: Retry | None = None) -> None:
        self.default_retry = default_retry
        self._definitions: dict[tuple[str, int], tuple[Definition, Interpreter]] = {}
        self._latest: dict[str, int] = {}

    def register(self, *sagas: type | Definition) -> None:
        """Register saga classes (or definitions); a changed graph needs a new version."""
        for saga in sagas:
            definition = definition_of(saga)
            known = self._definitions.get(definition.key)
            if known is not None and known[0].graph_hash != definition.graph_hash:
                raise StateSagaError(
                    f"saga {definition.name!r} version {definition.version} is already "
                    "registered with a different graph; bump `version` for a changed graph",
                    saga=definition.name,
                )
            driven = with_default_retry(definition, self.default_retry)
            self._definitions[definition.key] = (driven, Interpreter(driven))
            if definition.version >= self._latest.get(definition.name, 0):
                self._latest[definition.name] = definition.version
            # the sagas its child steps start: their runs are driven (and recovered) here too
            self.register(*(c for c in children_of(definition) if c.key not in self._definitions))

    @property
    def definitions(self) -> list[Definition]:
        """Every registered definition."""
        return [definition for definition, _ in self._definitions.values()]

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(name, version) of every registered definition."""
        return list(self._definitions)

    def get(self, saga: str, version: int) -> Definition | None:
        """The registered definition of that name and version, if any."""
        found = self._definitions.get((saga, version))
        return None if found is None else found[0]

    def resolve(self, saga: SagaRef) -> tuple[Definition, Interpreter]:
        """A saga class or definition (registered on first use), or a name's newest version."""
        if not isinstance(saga, str):
            definition = definition_of(saga)
            if definition.key not in self._definitions:
                self.register(definition)
            return self._definitions[definition.key]
        version = self._latest.get(saga)
        if version is None:
            known = ", ".join(sorted(self._latest)) or "none"
            raise SagaNotRegistered(
                f"no saga named {saga!r} is registered (registered: {known}); pass the Saga "
                "class or register it with engine.register(...)",
                saga=saga,
            )
        return self._definitions[(saga, version)]

    def for_row(self, row: InstanceRow) -> tuple[Definition, Interpreter]:
        """The definition an instance started on; never another version or graph."""
        found = self._definitions.get((row.saga, row.saga_version))
        if found is None:
            raise SagaNotRegistered(
                f"instance {row.id} runs saga {row.saga!r} version {row.saga_version}, which "
                "this engine has not registered; register that version to drive it",
                saga=row.saga,
                instance_id=row.id,
            )
        if found[0].graph_hash != row.graph_hash:
            raise SagaNotRegistered(
                f"instance {row.id} was started on a different graph of saga {row.saga!r} "
                f"version {row.saga_version} (hash {row.graph_hash}, registered "
                f"{found[0].graph_hash}); register the original definition, and bump `version` "
                "when a graph changes",
                saga=row.saga,
                instance_id=row.id,
            )
        return found


def with_default_retry(definition: Definition, policy: Retry | None) -> Definition:
    """``definition`` with ``policy`` for every step that declared no retry policy."""
    if policy is None:
        return definition
    transitions = {
        name: t
        if t.step is None or t.step.retry_declared
        else attrs.evolve(t, step=attrs.evolve(t.step, retry=policy))
        for name, t in definition.transitions.items()
    }
    return definition.with_transitions(transitions)


def definition_of(saga: type | Definition) -> Definition:
    """The definition of a saga class (or the definition itself)."""
    if isinstance(saga, Definition):
        return saga
    definition = getattr(saga, "definition", None)
    if not isinstance(definition, Definition):
        raise SagaNotRegistered(f"{saga!r} is not a Saga class or a Definition")
    return definition
