"""The checks of a saga's declared migrations (``migrates_from``), when the class is defined.

A run moved from an older version must land somewhere it could have got to on
the new graph: every open state of the old graph lands on a state of the new
one that is not final; a run that has passed a pivot lands after a pivot and a
run that has not lands before every pivot (so no pivot runs twice, and nothing
past one is compensated); every step a moved run may still have to undo has a
compensation on the new graph; and the context function takes the old
context type and returns the new one. Each failure names the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from statesaga._annotations import migration_context_problem
from statesaga._fsm import Graph
from statesaga.definition import Definition, MigrationDef, StateDef, TransitionDef
from statesaga.errors import DefinitionError
from statesaga.migration import Migration

__all__ = ["MigrationChecks"]


class MigrationChecks:
    """Checks ``migrates_from`` against the old graph and the new one.

    Args:
        fail: makes the ``DefinitionError`` for a message, naming the saga.
        saga, version: the new version's name and version.
        input_type, context_type: the new version's ``I`` and ``D``.
    """

    def __init__(
        self,
        fail: Callable[..., DefinitionError],
        saga: str,
        version: int,
        input_type: Any,
        context_type: Any,
    ) -> None:
        self.fail = fail
        self.saga = saga
        self.version = version
        self.input_type = input_type
        self.context_type = context_type

    def collect(
        self,
        declared: Any,
        states: dict[str, StateDef],
        transitions: dict[str, TransitionDef],
        graph: Graph,
        initial: str,
    ) -> dict[int, MigrationDef]:
        """The checked migrations of ``migrates_from`` (``None``: none), by old version."""
        if declared is None:
            return {}
        items = declared if isinstance(declared, tuple | list) else (declared,)
        new = _Sides(states, transitions, graph, initial)
        result: dict[int, MigrationDef] = {}
        for item in items:
            if not isinstance(item, Migration):
                raise self.fail(
                    f"migrates_from must be a Migration(OldSaga, states=...) or a tuple of "
                    f"them, got {item!r}"
                )
            plan = self.check(item, new)
            if plan.from_version in result:
                raise self.fail(
                    f"migrates_from declares two migrations from version {plan.from_version}; "
                    "keep one"
                )
            result[plan.from_version] = plan
        return result

    def check(self, migration: Migration[Any, Any], new: _Sides) -> MigrationDef:
        source = getattr(migration.source, "definition", None)
        if not isinstance(source, Definition):
            raise self.fail(
                f"{migration!r} must name the older version's Saga class, got {migration.source!r}"
            )
        if source.name != self.saga:
            raise self.fail(
                f"migrates_from names saga {source.name!r}; a migration moves runs of older "
                f"versions of {self.saga!r} itself, so name one of those"
            )
        old_version = source.version
        if old_version >= self.version:
            raise self.fail(
                f"migrates_from names version {old_version}, which is not older than this "
                f"version ({self.version}); migrate from a lower version"
            )
        if source.input_type is not self.input_type:
            raise self.fail(
                f"version {old_version} takes input {_name(source.input_type)} and this "
                f"version {_name(self.input_type)}; a migration keeps each run's input, so "
                "keep the input type (add a new saga for a new input)"
            )
        old = _Sides(
            dict(source.states),
            dict(source.transitions),
            _graph_of(source),
            source.initial,
        )
        where = f"the migration from version {old_version}"
        states = self.map_states(migration.states, old, new, where, old_version)
        self.check_pivots(states, old, new, where, old_version)
        mapped = self.map_transitions(migration.transitions, old, new, where, old_version)
        self.check_context(migration.context, source, where)
        return MigrationDef(source, states, mapped, migration.context)

    def map_states(
        self,
        declared: Mapping[str, str],
        old: _Sides,
        new: _Sides,
        where: str,
        old_version: int,
    ) -> dict[str, str]:
        for name, target in declared.items():
            if name not in old.states:
                raise self.fail(
                    f"{where} maps state {name!r}, which version {old_version} does not have "
                    f"(its states: {', '.join(old.states)}); drop it or fix the name",
                    state=name,
                )
            if old.states[name].final:
                raise self.fail(
                    f"{where} maps final state {name!r}: runs there have ended and never move; "
                    "drop it",
                    state=name,
                )
            if target not in new.states:
                raise self.fail(
                    f"{where} maps state {name!r} to {target!r}, which this version does not "
                    f"have (its states: {', '.join(new.states)}); map it to one of them",
                    state=name,
                )
        states: dict[str, str] = {}
        for name, spec in old.states.items():
            if spec.final:
                continue
            target = declared.get(name, name)
            if target not in new.states:
                raise self.fail(
                    f"state {name!r} of version {old_version} is open (runs may wait or be due "
                    f"there) and this version has no state of that name; map it in {where}: "
                    f"states={{{name!r}: ...}}",
                    state=name,
                )
            if new.states[target].final:
                raise self.fail(
                    f"{where} lands runs of state {name!r} in final state {target!r}, which "
                    "would complete them without their remaining steps; map it to a state "
                    "before the end",
                    state=name,
                )
            states[name] = target
        return states

    def check_pivots(
        self, states: dict[str, str], old: _Sides, new: _Sides, where: str, old_version: int
    ) -> None:
        for name, target in states.items():
            if name in old.before and target not in new.before:
                raise self.fail(
                    f"{where} lands runs of state {name!r} (before the pivot of version "
                    f"{old_version}: they have not taken it) in {target!r}, which this version "
                    "reaches only after a pivot, so a pivot would be skipped; map it to a "
                    "state before the pivot",
                    state=name,
                )
            if name in old.after and target not in new.after:
                raise self.fail(
                    f"{where} lands runs of state {name!r} (after the pivot of version "
                    f"{old_version}: they have taken it) in {target!r}, which comes before "
                    "the pivot in this version, so the pivot would run twice or the steps "
                    "before it be compensated; map it to a state after the pivot",
                    state=name,
                )

    def map_transitions(
        self,
        declared: Mapping[str, str],
        old: _Sides,
        new: _Sides,
        where: str,
        old_version: int,
    ) -> dict[str, str]:
        for name, target in declared.items():
            if name not in old.transitions:
                raise self.fail(
                    f"{where} maps transition {name!r}, which version {old_version} does not "
                    "have; drop it or fix the name",
                    transition=name,
                )
            if target not in new.transitions:
                raise self.fail(
                    f"{where} maps transition {name!r} to {target!r}, which this version does "
                    "not have; map it to one of its transitions",
                    transition=name,
                )
        mapped = {
            name: declared.get(name, name)
            for name in old.transitions
            if declared.get(name, name) in new.transitions
        }
        for t in old.transitions.values():
            # a step into a final state completes the run: it is never on an open run's stack
            if not t.compensatable or old.states[t.target].final:
                continue
            into = mapped.get(t.name)
            if into is None or not new.transitions[into].compensatable:
                raise self.fail(
                    f"step {t.name!r} of version {old_version} has a compensation that a moved "
                    f"run may still have to run, but this version has no transition "
                    f"{into or t.name!r} with a compensation; keep it, or map it in {where}: "
                    f"transitions={{{t.name!r}: ...}}",
                    transition=t.name,
                )
        return mapped

    def check_context(
        self, function: Callable[..., Any] | None, source: Definition, where: str
    ) -> None:
        if function is None:
            return
        if not callable(function):
            raise self.fail(f"{where}: context must be a function, got {function!r}")
        if inspect.iscoroutinefunction(function):
            raise self.fail(
                f"{where}: context function {_name(function)} is async; make it a plain "
                "function of the data"
            )
        try:
            inspect.signature(function).bind(object())
        except TypeError:
            raise self.fail(
                f"{where}: context function {_name(function)} must take one argument, the "
                f"old context ({_name(source.context_type)})"
            ) from None
        except ValueError:  # no signature to read (a builtin): left to mypy
            return
        problem = migration_context_problem(function, source.context_type, self.context_type)
        if problem is not None:
            raise self.fail(f"{where}: context function {_name(function)} {problem}")


class _Sides:
    """One graph's states, transitions, and the states before and after its pivots."""

    def __init__(
        self,
        states: dict[str, StateDef],
        transitions: dict[str, TransitionDef],
        graph: Graph,
        initial: str,
    ) -> None:
        self.states = states
        self.transitions = transitions
        pivots = frozenset(
            t.name for t in transitions.values() if t.step is not None and t.step.pivot
        )
        #: states a run that has not taken a pivot can be in
        self.before = graph.reachable_from([initial], stop_at=pivots)
        #: states a run that has taken a pivot can be in
        self.after = graph.reachable_from([transitions[p].target for p in pivots])


def _graph_of(definition: Definition) -> Graph:
    return Graph(
        list(definition.states),
        [(t.name, t.source, t.target) for t in definition.transitions.values()],
        initial=definition.initial,
    )


def _name(value: Any) -> str:
    return str(getattr(value, "__qualname__", None) or getattr(value, "__name__", repr(value)))
