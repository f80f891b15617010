"""Compile a ``Saga`` class into a validated ``Definition``.

Every check that can run before anything executes runs here, when the class
is created; each failure is a ``DefinitionError`` naming the saga, the state
or transition at fault, and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs

from statesaga._annotations import annotation_problem, output_problem, type_text
from statesaga._fsm import Graph
from statesaga.definition import Definition, StateDef, StepDef, TransitionDef
from statesaga.dsl import Event, State, Transition, duration, event_name
from statesaga.errors import DefinitionError
from statesaga.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY
from statesaga.serde import converter

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
        deadline = self.positive(getattr(self.cls, "deadline", None), "the run deadline")
        namespace: dict[str, Any] = {}
        for klass in reversed(self.cls.__mro__):
            namespace.update(vars(klass))
        states = self.collect_states(namespace)
        transitions = self.collect_transitions(namespace, states)
        initial = self.check_initial(states)
        graph = Graph(
            list(states),
            [(t.name, t.source, t.target) for t in transitions.values()],
            initial=initial,
        )
        self.check_final_states(states, transitions)
        self.check_waiting_states(states, transitions)
        self.check_reachability(states, graph, initial)
        self.check_pivots(states, transitions, graph, initial)
        self.check_types(transitions)
        output = _static(namespace.get("output"))
        initial_context = _static(namespace.get("initial_context"))
        self.check_callables(transitions, output, initial_context)
        output_type = self.output_type(output)
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
            automatic_from=_automatic_table(states, transitions),
            events_from=_event_table(states, transitions),
            timeout_from={t.source: t for t in transitions.values() if t.on_timeout},
        )
        return attrs.evolve(definition, graph_hash=definition.shape_hash())

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
            timeout = self.positive(value.timeout, f"the timeout of state {attr!r}", state=attr)
            states[attr] = StateDef(attr, value.initial, value.final, timeout)
        self.state_names = seen
        return states

    def collect_transitions(
        self, namespace: dict[str, Any], states: dict[str, StateDef]
    ) -> dict[str, TransitionDef]:
        seen: dict[int, str] = {}
        result: dict[str, TransitionDef] = {}
        events: dict[tuple[str, str], str] = {}
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
                if (source, event) in events:
                    raise self.fail(
                        f"duplicate event: state {source!r} accepts {event!r} on both "
                        f"{events[source, event]!r} and {attr!r}; give them distinct events",
                        state=source,
                        transition=attr,
                    )
                events[source, event] = attr
            if event is not None and value.timeout_edge:
                raise self.fail(
                    f"transition {attr!r} has both .on({event!r}) and .on_timeout(); choose one",
                    transition=attr,
                )
            if value.guard is not None and (event is not None or value.timeout_edge):
                # the interpreter evaluates guards only to choose among automatic transitions
                trigger = ".on_timeout()" if value.timeout_edge else f".on({event!r})"
                raise self.fail(
                    f"transition {attr!r} is taken {trigger} but also has a guard, which would "
                    "never be evaluated; drop .when()/.unless() and branch with guarded "
                    "automatic transitions out of its target state instead",
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
            )
        return result

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
        if spec.step is None:
            if spec.undo is not None or spec.pivot:
                raise self.fail(f"transition {attr!r} has a compensation but no step")
            return None
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
        )

    # -- checks ----------------------------------------------------------------

    def check_initial(self, states: dict[str, StateDef]) -> str:
        initials = [s.name for s in states.values() if s.initial]
        if not initials:
            raise self.fail(
                "no initial state; mark the state every run starts in with State(initial=True)"
            )
        if len(initials) > 1:
            raise self.fail(
                f"several initial states ({', '.join(initials)}); keep initial=True on exactly one",
                state=initials[1],
            )
        if not any(s.final for s in states.values()):
            raise self.fail("no final state; mark the end of the saga with State(final=True)")
        return initials[0]

    def check_final_states(
        self, states: dict[str, StateDef], transitions: dict[str, TransitionDef]
    ) -> None:
        for t in transitions.values():
            if states[t.source].final:
                raise self.fail(
                    f"transition {t.name!r} leaves final state {t.source!r}; a final state ends "
                    "the saga, so remove the transition or make the state non-final",
                    state=t.source,
                    transition=t.name,
                )

    def check_waiting_states(
        self, states: dict[str, StateDef], transitions: dict[str, TransitionDef]
    ) -> None:
        for state in states.values():
            out = [t for t in transitions.values() if t.source == state.name]
            unguarded = [t.name for t in out if t.automatic and t.guard is None]
            events = [t.name for t in out if t.event is not None]
            timeouts = [t.name for t in out if t.on_timeout]
            if len(unguarded) > 1:
                raise self.fail(
                    f"state {state.name!r} has several automatic transitions without a guard "
                    f"({', '.join(unguarded)}); add .when(guard) to all but one",
                    state=state.name,
                    transition=unguarded[1],
                )
            if unguarded and (events or state.timeout is not None):
                raise self.fail(
                    f"state {state.name!r} waits for events or a timeout but also has the "
                    f"unguarded automatic transition {unguarded[0]!r}, which is always taken "
                    "first; guard it with .when(...) or move the events to another state",
                    state=state.name,
                    transition=unguarded[0],
                )
            if state.timeout is not None and not events:
                raise self.fail(
                    f"waiting state {state.name!r} has a timeout but no event leaves it; add a "
                    "transition with .on('event') from it, or drop the timeout",
                    state=state.name,
                )
            if timeouts and state.timeout is None:
                raise self.fail(
                    f"transition {timeouts[0]!r} is taken on timeout, but state {state.name!r} "
                    "has no timeout; add State(timeout=...)",
                    state=state.name,
                    transition=timeouts[0],
                )
            if len(timeouts) > 1:
                raise self.fail(
                    f"state {state.name!r} has several .on_timeout() transitions "
                    f"({', '.join(timeouts)}); keep one",
                    state=state.name,
                    transition=timeouts[1],
                )

    def check_reachability(self, states: dict[str, StateDef], graph: Graph, initial: str) -> None:
        reachable = graph.reachable_from([initial])
        for state in states:
            if state not in reachable:
                raise self.fail(
                    f"state {state!r} is unreachable from the initial state {initial!r}; add a "
                    "transition into it or remove it",
                    state=state,
                )
        finals = [s.name for s in states.values() if s.final]
        can_finish = graph.can_reach(finals)
        for state in states:
            if state not in can_finish:
                raise self.fail(
                    f"state {state!r} has no path to a final state, so a run could stop there "
                    "forever; add a transition from it towards a final state",
                    state=state,
                )

    def check_pivots(
        self,
        states: dict[str, StateDef],
        transitions: dict[str, TransitionDef],
        graph: Graph,
        initial: str,
    ) -> None:
        pivots = frozenset(
            t.name for t in transitions.values() if t.step is not None and t.step.pivot
        )
        before = graph.reachable_from([initial], stop_at=pivots)
        after = graph.reachable_from([transitions[p].target for p in pivots])
        for t in transitions.values():
            step = t.step
            if step is None:
                continue
            if step.pivot and step.compensation is not None:
                raise self.fail(
                    f"pivot step {t.name!r} has a compensation; a pivot is never compensated, so "
                    "remove undo=... or drop pivot=True",
                    transition=t.name,
                )
            if step.compensation is not None and t.source in after:
                raise self.fail(
                    f"step {t.name!r} has a compensation but runs after a pivot, where the saga "
                    "only goes forward; remove undo=... or move the pivot later",
                    transition=t.name,
                )
            # a step into a final state completes the saga when it succeeds: nothing after
            # it can fail, so its compensation could never run and it needs none
            into_final = states[t.target].final
            needs_marker = t.source in before and not (
                step.compensation or step.pivot or step.read_only or into_final
            )
            if needs_marker:
                raise self.fail(
                    f"step {t.name!r} has no compensation; add undo=..., or mark it "
                    "read_only=True if it has no side effect, or pivot=True if it cannot be undone",
                    transition=t.name,
                )

    def check_types(self, transitions: dict[str, TransitionDef]) -> None:
        self.check_type(self.input_type, "input type")
        self.check_type(self.context_type, "context type")
        for t in transitions.values():
            if t.payload_type is not None:
                self.check_type(
                    t.payload_type,
                    f"payload type of event {t.event!r} on transition {t.name!r}",
                    t.name,
                )

    def check_type(self, type_: Any, what: str, transition: str | None = None) -> None:
        name = getattr(type_, "__name__", repr(type_))
        structured = attrs.has(type_) or dataclasses.is_dataclass(type_)
        if isinstance(type_, type) and not structured and type_ not in _PRIMITIVES:
            raise self.fail(
                f"{what} {name} is neither an attrs class nor a dataclass; decorate it with "
                "@attrs.define (or @attrs.frozen) so cattrs can structure it",
                transition=transition,
            )
        try:
            converter.get_structure_hook(type_)
            converter.get_unstructure_hook(type_)
        except (cattrs.StructureHandlerNotFoundError, TypeError, NameError) as error:
            raise self.fail(
                f"{what} {name} cannot be structured by cattrs ({error}); use attrs classes "
                "with JSON-friendly field types, or register hooks on statesaga.serde.converter",
                transition=transition,
            ) from None

    def check_callables(
        self,
        transitions: dict[str, TransitionDef],
        output: Callable[..., Any] | None,
        initial_context: Callable[..., Any] | None,
    ) -> None:
        for t in transitions.values():
            if t.step is not None:
                self.check_signature(t.step.function, 1, f"step {t.name!r}", t.name)
                self.check_annotations(t.step.function, f"step {t.name!r}", t.name, "data")
                if t.step.compensation is not None:
                    what = f"compensation of step {t.name!r}"
                    self.check_signature(t.step.compensation, 1, what, t.name)
                    self.check_annotations(t.step.compensation, what, t.name, "data")
            if t.guard is not None:
                what = f"guard of transition {t.name!r}"
                self.check_signature(t.guard, 1, what, t.name)
                self.check_annotations(t.guard, what, t.name, "bool")
        if output is not None:
            self.check_signature(output, 2, "output(input, data)")
            problem = (
                None
                if self.declared_output is None
                else output_problem(output, self.declared_output)
            )
            if problem is not None:
                raise self.fail(problem)
        elif self.declared_output is not None:
            raise self.fail(
                f"the saga declares the output type {type_text(self.declared_output)} but has "
                "no output(input, data); add that static method, or drop the third type "
                "argument of Saga[...]"
            )
        if initial_context is not None:
            self.check_signature(initial_context, 1, "initial_context(input)")
        else:
            try:
                self.context_type()
            except TypeError as error:
                raise self.fail(
                    f"context type {self.context_type.__name__} cannot be built without "
                    f"arguments ({error}); give its fields defaults, or define a static method "
                    "initial_context(input) on the saga"
                ) from None

    def check_annotations(self, function: Any, what: str, transition: str, returns: str) -> None:
        problem = annotation_problem(function, self.input_type, self.context_type, returns=returns)
        if problem is not None:
            name = getattr(function, "__qualname__", None) or repr(function)
            raise self.fail(f"{what} ({name}) {problem}", transition=transition)

    def check_signature(
        self, function: Any, arity: int, what: str, transition: str | None = None
    ) -> None:
        if not callable(function):
            raise self.fail(f"{what} is {function!r}, which is not callable", transition=transition)
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return  # builtins without a signature: trust them
        try:
            signature.bind(*range(arity))
        except TypeError:
            expected = "ctx" if arity == 1 else "input, data" if arity == 2 else "..."
            raise self.fail(
                f"{what} has the signature {getattr(function, '__name__', function)}{signature}, "
                f"but is called with ({expected}); make it accept exactly that",
                transition=transition,
            ) from None

    def output_type(self, output: Callable[..., Any] | None) -> Any:
        if output is None:
            return None
        if self.declared_output is not None:
            self.check_type(self.declared_output, "output type")
            return self.declared_output
        try:
            hints = typing.get_type_hints(output)
        except Exception:  # unresolved annotations: leave the output untyped
            return None
        result = hints.get("return")
        if result is not None and result is not type(None):
            self.check_type(result, "output type")
        return result


_PRIMITIVES = (int, float, str, bool, dict, list)


def _automatic_table(
    states: dict[str, StateDef], transitions: dict[str, TransitionDef]
) -> dict[str, tuple[TransitionDef, ...]]:
    table: dict[str, tuple[TransitionDef, ...]] = {}
    for state in states:
        out = [t for t in transitions.values() if t.source == state and t.automatic]
        # guarded edges are tried in declaration order; the unguarded one is the fallback
        table[state] = tuple(
            [t for t in out if t.guard is not None] + [t for t in out if t.guard is None]
        )
    return table


def _event_table(
    states: dict[str, StateDef], transitions: dict[str, TransitionDef]
) -> dict[str, dict[str, TransitionDef]]:
    table: dict[str, dict[str, TransitionDef]] = {state: {} for state in states}
    for t in transitions.values():
        if t.event is not None:
            table[t.source][t.event] = t
    return table


def _static(value: Any) -> Callable[..., Any] | None:
    if isinstance(value, staticmethod):
        return value.__func__
    return value if callable(value) else None


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
