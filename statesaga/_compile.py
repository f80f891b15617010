"""Compile a ``Saga`` class into a validated ``Definition``.

Every check that can run before anything executes runs here, when the class
is created; each failure is a ``DefinitionError`` naming the saga, the state
or transition at fault, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from statesaga._compile_children import check_children, child_step
from statesaga._compile_graph import GraphChecks
from statesaga._compile_migrations import MigrationChecks
from statesaga._compile_parallel import ParallelChecks
from statesaga._compile_types import TypeChecks
from statesaga._fsm import Graph
from statesaga.definition import Definition, StateDef, StepDef, TransitionDef, lookup_tables
from statesaga.dsl import Event, State, Transition, duration, event_name
from statesaga.errors import DefinitionError
from statesaga.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY

__all__ = ["compile_saga"]


def compile_saga(
    cls: type, input_type: Any, context_type: Any, output_type: Any = None
) -> Definition:
    """Build and validate the definition of saga class ``cls``.

    ``output_type`` is the third argument of ``Saga[I, D, O]``, ``None`` when left out.
    """
    name = vars(cls).get("name")
    if not isinstance(name, str) or not name:
        raise DefinitionError(
            f"saga class {cls.__name__} has no name; add a class attribute such as "
            f"name = {_kebab(cls.__name__)!r}",
            saga=cls.__name__,
        )
    return _Compiler(cls, name, input_type, context_type, output_type).compile()


class _Compiler:
    def __init__(
        self, cls: type, name: str, input_type: Any, context_type: Any, output_type: Any
    ) -> None:
        self.cls = cls
        self.saga = name
        self.input_type = input_type
        self.context_type = context_type
        self.declared_output = output_type
        self.graph_checks = GraphChecks(self.fail)
        self.type_checks = TypeChecks(self.fail, input_type, context_type, output_type)
        self.parallel_checks = ParallelChecks(self.fail, context_type)

    def fail(
        self, message: str, *, state: str | None = None, transition: str | None = None
    ) -> DefinitionError:
        return DefinitionError(
            f"saga {self.saga!r}: {message}", saga=self.saga, state=state, transition=transition
        )

    # -- collecting ---------------------------------------------------------------

    def compile(self) -> Definition:
        version = getattr(self.cls, "version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.fail(f"version must be a whole number >= 1, got {version!r}")
        namespace: dict[str, Any] = {}
        for klass in reversed(self.cls.__mro__):
            namespace.update(vars(klass))
        deadline, deadline_of = self.deadline(namespace.get("deadline"))
        states = self.collect_states(namespace)
        transitions = self.collect_transitions(namespace, states)
        initial = self.graph_checks.check_initial(states)
        graph = Graph(
            list(states),
            [(t.name, t.source, t.target) for t in transitions.values()],
            initial=initial,
        )
        check_children(self.fail, transitions)
        self.graph_checks.check_final_states(states, transitions)
        self.graph_checks.check_waiting_states(states, transitions)
        self.graph_checks.check_reachability(states, graph, initial)
        self.graph_checks.check_pivots(states, transitions, graph, initial)
        self.parallel_checks.check(transitions, graph, self.type_checks)
        self.type_checks.check_types(transitions)
        output = _static(namespace.get("output"))
        initial_context = _static(namespace.get("initial_context"))
        self.type_checks.check_callables(transitions, output, initial_context)
        self.type_checks.check_state_callables(states, deadline_of)
        output_type = self.type_checks.output_type(output)
        migrations = MigrationChecks(
            self.fail, self.saga, version, self.input_type, self.context_type
        ).collect(namespace.get("migrates_from"), states, transitions, graph, initial)
        definition = Definition(
            name=self.saga,
            version=version,
            input_type=self.input_type,
            context_type=self.context_type,
            states=states,
            transitions=transitions,
            initial=initial,
            deadline=deadline,
            refuse_early_events=bool(getattr(self.cls, "refuse_early_events", False)),
            output=output,
            output_type=output_type,
            initial_context=initial_context,
            saga_class=self.cls,
            migrations=migrations,
            deadline_of=deadline_of,
            **lookup_tables(states, transitions),
        )
        return attrs.evolve(definition, graph_hash=definition.shape_hash())

    def deadline(self, value: Any) -> tuple[float | None, Callable[..., Any] | None]:
        """The fixed run deadline, or the static method computing it from the input."""
        function = _static(value)
        if function is None:
            return self.positive(value, "the run deadline"), None
        if not isinstance(value, staticmethod):
            raise self.fail(
                "deadline is computed by a method; make it a @staticmethod "
                "deadline(input) returning seconds, a timedelta, a datetime or None"
            )
        return None, function

    def positive(self, value: Any, what: str, **where: str) -> float | None:
        try:
            result = duration(value)
        except DefinitionError as error:
            raise self.fail(f"{what}: {error.message}", **where) from None
        if result is not None and result <= 0:
            raise self.fail(f"{what} must be positive, got {value!r}; use a value > 0", **where)
        return result

    def collect_states(self, namespace: dict[str, Any]) -> dict[str, StateDef]:
        seen: dict[int, str] = {}
        states: dict[str, StateDef] = {}
        for attr, value in namespace.items():
            if not isinstance(value, State):
                continue
            if id(value) in seen:
                raise self.fail(
                    f"duplicate state name: the same State is declared as {seen[id(value)]!r} "
                    f"and {attr!r}; give each state its own State()",
                    state=attr,
                )
            seen[id(value)] = attr
            if value.initial and value.final:
                raise self.fail(
                    f"state {attr!r} is both initial and final; a saga needs at least one step",
                    state=attr,
                )
            if callable(value.timeout):
                states[attr] = StateDef(attr, value.initial, value.final, None, value.timeout)
                continue
            timeout = self.positive(value.timeout, f"the timeout of state {attr!r}", state=attr)
            states[attr] = StateDef(attr, value.initial, value.final, timeout)
        self.state_names = seen
        return states

    def collect_transitions(
        self, namespace: dict[str, Any], states: dict[str, StateDef]
    ) -> dict[str, TransitionDef]:
        seen: dict[int, str] = {}
        result: dict[str, TransitionDef] = {}
        events: dict[tuple[str, str], list[tuple[str, bool, Any]]] = {}
        for attr, value in namespace.items():
            if not isinstance(value, Transition):
                continue
            if id(value) in seen:
                raise self.fail(
                    f"duplicate transition name: the same transition is declared as "
                    f"{seen[id(value)]!r} and {attr!r}; declare it once",
                    transition=attr,
                )
            seen[id(value)] = attr
            source = self.state_name(value.source, attr, "from")
            target = self.state_name(value.target, attr, "to")
            event, payload = self.event_of(value, attr)
            if event is not None:
                taken = event in states or isinstance(namespace.get(event), Transition)
                if taken:
                    raise self.fail(
                        f"duplicate name: event {event!r} of transition {attr!r} is also "
                        "the name of a state or transition; rename the event",
                        transition=attr,
                    )
                self.check_event_choice(
                    events.setdefault((source, event), []),
                    source,
                    event,
                    (attr, value.guard is not None, payload),
                )
            if event is not None and value.timeout_edge:
                raise self.fail(
                    f"transition {attr!r} has both .on({event!r}) and .on_timeout(); choose one",
                    transition=attr,
                )
            if value.guard is not None and value.timeout_edge:
                raise self.fail(
                    f"transition {attr!r} is taken .on_timeout() but also has a guard, which "
                    "would never be evaluated (time passing has nothing to judge); drop "
                    ".when()/.unless() and branch with guarded automatic transitions out of "
                    "its target state instead",
                    transition=attr,
                )
            result[attr] = TransitionDef(
                name=attr,
                source=source,
                target=target,
                step=self.step(value, attr),
                guard=value.guard,
                guard_negated=value.guard_negated,
                event=event,
                payload_type=payload,
                on_timeout=value.timeout_edge,
                parallel=self.parallel_checks.compile(value, attr, source, event),
            )
        return result

    def check_event_choice(
        self,
        takers: list[tuple[str, bool, Any]],
        source: str,
        event: str,
        taker: tuple[str, bool, Any],
    ) -> None:
        """Several transitions may take one event from one state if all but one are guarded.

        ``takers`` are the ``(name, guarded, payload type)`` of those seen so far.
        """
        attr, guarded, payload = taker
        for other, other_guarded, other_payload in takers:
            if not other_guarded and not guarded:
                raise self.fail(
                    f"duplicate event: state {source!r} accepts {event!r} on both "
                    f"{other!r} and {attr!r} without a guard; give them distinct events, "
                    "or guard all but one with .when(...) (the first that passes is taken)",
                    state=source,
                    transition=attr,
                )
            if other_payload is not payload:
                raise self.fail(
                    f"transitions {other!r} and {attr!r} both take {event!r} from state "
                    f"{source!r} but declare different payload types; declare one payload type "
                    "for the event",
                    state=source,
                    transition=attr,
                )
        takers.append(taker)

    def event_of(self, spec: Transition, attr: str) -> tuple[str | None, type | None]:
        """The transition's event name and payload type, from an ``Event`` or a name."""
        if not isinstance(spec.event, Event):
            return spec.event, spec.payload
        try:
            return event_name(spec.event), spec.event.payload
        except DefinitionError as error:
            raise self.fail(
                f"transition {attr!r} is taken on {error.message}", transition=attr
            ) from None

    def state_name(self, state: State, transition: str, direction: str) -> str:
        name = self.state_names.get(id(state))
        if name is None:
            if not state.names:
                unknown = "a State() that is not a class attribute"
            elif state.owner is not None and not issubclass(self.cls, state.owner):
                unknown = f"state {state.name!r} of {state.owner.__name__}"
            else:
                unknown = f"state {state.name!r}"
            raise self.fail(
                f"transition {transition!r} goes {direction} {unknown}, which is not declared on "
                "this saga; declare it as a class attribute of the saga",
                transition=transition,
            )
        return name

    def step(self, spec: Transition, attr: str) -> StepDef | None:
        if spec.child_saga is not None:
            timeout = self.positive(spec.timeout, f"the timeout of step {attr!r}", transition=attr)
            return child_step(self.fail, spec, attr, timeout)
        if spec.step is None:
            if spec.undo is not None or spec.pivot or spec.void is not None:
                raise self.fail(f"transition {attr!r} has a compensation but no step")
            return None
        if spec.void is not None and not spec.pivot:
            raise self.fail(
                f"step {attr!r} declares a void but is not a pivot; a void undoes a pivot "
                "whose outcome is unknown: add pivot=True, or for an ordinary step use "
                "undo=... with undo_on_failure=True",
                transition=attr,
            )
        if spec.read_only and spec.undo is not None:
            raise self.fail(
                f"step {attr!r} is marked read_only and has a compensation; drop one of them",
                transition=attr,
            )
        if spec.pivot and spec.read_only:
            raise self.fail(
                f"step {attr!r} is marked both pivot and read_only; a pivot is a step with "
                "effects, so drop read_only",
                transition=attr,
            )
        if spec.undo_on_failure and spec.undo is None:
            raise self.fail(
                f"step {attr!r} asks for undo_on_failure but has no compensation; add undo=...",
                transition=attr,
            )
        timeout = self.positive(spec.timeout, f"the timeout of step {attr!r}", transition=attr)
        return StepDef(
            function=spec.step,
            compensation=spec.undo,
            pivot=spec.pivot,
            read_only=spec.read_only,
            retry=spec.retry or DEFAULT_STEP_RETRY,
            retry_declared=spec.retry is not None,
            compensation_retry=spec.undo_retry or DEFAULT_COMPENSATION_RETRY,
            timeout=timeout,
            transactional=spec.transactional,
            compensate_on_failure=spec.undo_on_failure,
            void=spec.void,
        )

    # -- checks ----------------------------------------------------------------


def _static(value: Any) -> Callable[..., Any] | None:
    if isinstance(value, staticmethod):
        return value.__func__
    return value if callable(value) else None


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
