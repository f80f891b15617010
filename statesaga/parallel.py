"""Parallel branches: a transition that runs several branches at once and joins them.

``source.to(target).parallel(flight=Branch(...), hotel=Branch(...))`` runs each
branch (one step, or a short chain of steps) concurrently when the run is in
``source``, and moves to ``target`` once every branch has finished. When a
branch fails for good, no new branch step starts, the steps already running
are awaited, and the run compensates: every branch step that took effect is
undone, the latest first (so each branch is undone in reverse), then the steps
before the fork.

Branches share the saga's context. Each branch declares the context fields it
owns (``writes=``); a branch step returns the context (or ``None``) and only
its own fields are kept. The fields of different branches are disjoint
(checked when the saga class is created), so no branch overwrites another.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class Trip:
...     trip_id: str
>>> @attrs.define
... class Booked:
...     flight: str | None = None
...     hotel: str | None = None
>>> def book_flight(ctx):
...     return attrs.evolve(ctx.data, flight="F-1")
>>> def book_hotel(ctx):
...     return attrs.evolve(ctx.data, hotel="H-1")
>>> def cancel(ctx):
...     return None
>>> class BookTrip(Saga[Trip, Booked]):
...     name = "book-trip"
...     planned = State(initial=True)
...     booked = State(final=True)
...     book = planned.to(booked).parallel(
...         flight=Branch(book_flight, undo=cancel, writes="flight"),
...         hotel=Branch(book_hotel, undo=cancel, writes="hotel"),
...     )
>>> [s.name for s in BookTrip.definition.transitions["book"].parallel.steps]
['book.flight', 'book.hotel']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

import attrs

from statesaga.retry import Retry

if TYPE_CHECKING:
    from statesaga.definition import TransitionDef

__all__ = [
    "Branch",
    "BranchDef",
    "BranchStep",
    "ParallelDef",
    "branch_step_name",
    "branches_problem",
]


@attrs.frozen
class BranchStep:
    """One step of a branch as declared (see :meth:`Branch.then`)."""

    function: Callable[..., Any]
    undo: Callable[..., Any] | None = None
    read_only: bool = False
    retry: Retry | None = None
    undo_retry: Retry | None = None
    timeout: float | timedelta | None = None
    undo_on_failure: bool = False


class Branch:
    """A branch of a parallel transition: a step, or a short chain of steps run in order.

    Args:
        step: the branch's first step, ``step(ctx) -> context | None`` (sync or ``async``).
        undo, read_only, retry, undo_retry, timeout, undo_on_failure: as for
            :meth:`Transition.run <statesaga.dsl.Transition.run>`; each branch
            step retries and times out on its own.
        writes: the context fields this branch owns (a name or several). A step
            of the branch returns the context with changes to these fields only;
            they are merged into the run's context as the step finishes. A branch
            that writes nothing leaves it out and returns ``None``.

    A branch step may not be a pivot nor transactional (each branch step is
    persisted as its own transition, outside the step's call).

    >>> def reserve_car(ctx): ...
    >>> def release_car(ctx): ...
    >>> def confirm_car(ctx): ...
    >>> car = Branch(reserve_car, undo=release_car, writes="car").then(
    ...     confirm_car, read_only=True)
    >>> [s.function.__name__ for s in car.steps], car.writes
    (['reserve_car', 'confirm_car'], ('car',))
    """

    def __init__(
        self,
        step: Callable[..., Any],
        *,
        undo: Callable[..., Any] | None = None,
        read_only: bool = False,
        retry: Retry | None = None,
        undo_retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        undo_on_failure: bool = False,
        writes: str | Sequence[str] = (),
    ) -> None:
        self.steps: list[BranchStep] = []
        self.writes: tuple[str, ...] = (writes,) if isinstance(writes, str) else tuple(writes)
        self.then(
            step,
            undo=undo,
            read_only=read_only,
            retry=retry,
            undo_retry=undo_retry,
            timeout=timeout,
            undo_on_failure=undo_on_failure,
        )

    def then(
        self,
        step: Callable[..., Any],
        *,
        undo: Callable[..., Any] | None = None,
        read_only: bool = False,
        retry: Retry | None = None,
        undo_retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        undo_on_failure: bool = False,
    ) -> Self:
        """Run ``step`` after the branch's previous step succeeded (same options)."""
        self.steps.append(
            BranchStep(step, undo, read_only, retry, undo_retry, timeout, undo_on_failure)
        )
        return self

    def __repr__(self) -> str:
        names = ", ".join(getattr(s.function, "__name__", repr(s.function)) for s in self.steps)
        return f"Branch({names})"


def branch_step_name(transition: str, branch: str, index: int, count: int) -> str:
    """The step name of a branch's ``index``-th step (0-based) of ``count``.

    A one-step branch's step is ``"<transition>.<branch>"``; the steps of a chain
    are numbered from 1: ``"<transition>.<branch>.1"``, ``".2"``...

    >>> branch_step_name("book", "flight", 0, 1), branch_step_name("book", "car", 1, 2)
    ('book.flight', 'book.car.2')
    """
    base = f"{transition}.{branch}"
    return base if count == 1 else f"{base}.{index + 1}"


@attrs.frozen
class BranchDef:
    """A compiled branch: its name, its steps (as step-carrying transitions) and its fields."""

    name: str
    steps: tuple[TransitionDef, ...]
    writes: tuple[str, ...] = ()


@attrs.frozen
class ParallelDef:
    """The branches a parallel transition runs, at most ``max_concurrency`` steps at once."""

    branches: tuple[BranchDef, ...]
    max_concurrency: int | None = None

    @property
    def steps(self) -> tuple[TransitionDef, ...]:
        """Every branch step, branch by branch."""
        return tuple(step for branch in self.branches for step in branch.steps)

    def positions(self) -> Iterator[tuple[int, int, TransitionDef]]:
        """``(branch index, step index, step)`` of every branch step."""
        for b, branch in enumerate(self.branches):
            for s, step in enumerate(branch.steps):
                yield b, s, step

    def shape(self) -> list[Any]:
        """What the graph's hash records of the branches."""
        return [
            self.max_concurrency,
            [
                [
                    b.name,
                    list(b.writes),
                    [
                        [
                            t.name,
                            t.step.function_name if t.step else None,
                            t.step.compensation_name if t.step else None,
                            t.step.read_only if t.step else None,
                            t.step.compensate_on_failure if t.step else None,
                            t.step.timeout if t.step else None,
                        ]
                        for t in b.steps
                    ],
                ]
                for b in self.branches
            ],
        ]

    def map_steps(self, change: Callable[[TransitionDef], TransitionDef]) -> ParallelDef:
        """These branches with ``change`` applied to every branch step."""
        return attrs.evolve(
            self,
            branches=tuple(
                attrs.evolve(b, steps=tuple(change(t) for t in b.steps)) for b in self.branches
            ),
        )


def branches_problem(branches: dict[str, Any], max_concurrency: Any) -> str | None:
    """What is wrong with the arguments of ``.parallel(...)``, if anything."""
    if not branches:
        return (
            ".parallel() has no branches; pass them by name, as in "
            ".parallel(flight=Branch(book_flight, undo=cancel_flight), hotel=Branch(...))"
        )
    for name, branch in branches.items():
        if not isinstance(branch, Branch):
            return (
                f".parallel({name}={branch!r}): a branch must be a Branch, as in "
                f"{name}=Branch(step, undo=...)"
            )
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        return (
            f".parallel(max_concurrency={max_concurrency!r}): give a whole number >= 1, "
            "or None (every branch at once)"
        )
    return None
