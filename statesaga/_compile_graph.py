"""The graph checks of a saga's definition: initial and final states, waits, reachability,
pivots. Each failure names the state or transition at fault and the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from statesaga._fsm import Graph
from statesaga.definition import StateDef, TransitionDef
from statesaga.errors import DefinitionError

__all__ = ["GraphChecks"]


class GraphChecks:
    """Checks of the states and transitions as a graph.

    Args:
        fail: makes the ``DefinitionError`` for a message, naming the saga.
    """

    def __init__(self, fail: Callable[..., DefinitionError]) -> None:
        self.fail = fail

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
            if unguarded and (events or state.timed):
                raise self.fail(
                    f"state {state.name!r} waits for events or a timeout but also has the "
                    f"unguarded automatic transition {unguarded[0]!r}, which is always taken "
                    "first; guard it with .when(...) or move the events to another state",
                    state=state.name,
                    transition=unguarded[0],
                )
            if state.timed and not events:
                raise self.fail(
                    f"waiting state {state.name!r} has a timeout but no event leaves it; add a "
                    "transition with .on('event') from it, or drop the timeout",
                    state=state.name,
                )
            if timeouts and not state.timed:
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
            if step.void is not None and t.source in after:
                raise self.fail(
                    f"pivot {t.name!r} declares a void but runs after another pivot, where "
                    "nothing before it can be compensated any more; remove void=... or drop "
                    "the earlier pivot",
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
