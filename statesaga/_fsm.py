"""The one place that talks to ``transitions``: the saga's graph as a state machine.

``transitions`` holds the graph (states, triggers, sources and destinations);
statesaga asks it which triggers each state accepts and where they lead, and
derives reachability and the interpreter's lookup tables from those answers.
Its types never leave this module.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from transitions import Machine

__all__ = ["Graph"]


class Graph:
    """A directed graph of named states and named edges, backed by ``transitions.Machine``.

    >>> g = Graph(["a", "b", "c"], [("go", "a", "b"), ("stop", "b", "c")], initial="a")
    >>> sorted(g.reachable_from(["a"]))
    ['a', 'b', 'c']
    >>> g.triggers("b")
    ('stop',)
    """

    def __init__(
        self, states: list[str], edges: Iterable[tuple[str, str, str]], *, initial: str
    ) -> None:
        self._machine = Machine(
            model=None,
            states=states,
            transitions=[
                {"trigger": name, "source": source, "dest": dest} for name, source, dest in edges
            ],
            initial=initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        self._states = list(states)
        self._successors: dict[str, list[tuple[str, str]]] = {state: [] for state in states}
        for trigger, event in self._machine.events.items():
            for source, transitions in event.transitions.items():
                for transition in transitions:
                    self._successors[source].append((trigger, str(transition.dest)))

    def triggers(self, state: str) -> tuple[str, ...]:
        """The triggers (edge names) that leave ``state``."""
        return tuple(self._machine.get_triggers(state))

    def successors(self, state: str) -> list[tuple[str, str]]:
        """``(edge, destination)`` pairs leaving ``state``."""
        return self._successors[state]

    def reachable_from(
        self, starts: Iterable[str], *, stop_at: frozenset[str] = frozenset()
    ) -> set[str]:
        """States reachable from ``starts``, not following edges named in ``stop_at``."""
        seen = set(starts)
        queue = deque(seen)
        while queue:
            state = queue.popleft()
            for edge, dest in self._successors[state]:
                if edge not in stop_at and dest not in seen:
                    seen.add(dest)
                    queue.append(dest)
        return seen

    def can_reach(self, targets: Iterable[str]) -> set[str]:
        """States from which at least one of ``targets`` is reachable."""
        predecessors: dict[str, set[str]] = {state: set() for state in self._states}
        for state in self._states:
            for _, dest in self._successors[state]:
                predecessors[dest].add(state)
        seen = set(targets)
        queue = deque(seen)
        while queue:
            state = queue.popleft()
            for pred in predecessors[state]:
                if pred not in seen:
                    seen.add(pred)
                    queue.append(pred)
        return seen
