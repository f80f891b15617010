"""The values of parallel branches: a fork's progress, its decision and its outcomes.

A run in a parallel transition keeps, in its snapshot, how far each branch
got (:class:`Forking`). The interpreter answers with :class:`RunBranches`:
the branch steps to start now; the driver runs them concurrently and reports
each as it finishes (:class:`BranchSucceeded`, :class:`BranchFailed`).

>>> forking = Forking("book", 3, (BranchProgress(), BranchProgress(done=1)))
>>> forking.in_flight, forking.branches[1].done
(False, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # (resolved at run time by the core's vocabulary, which imports this)
    from statesaga.core._types import ErrorInfo, RunStep

__all__ = ["BranchFailed", "BranchProgress", "BranchSucceeded", "Forking", "RunBranches"]


@attrs.frozen
class BranchProgress:
    """How far one branch got.

    Attributes:
        done: how many of its steps completed.
        attempt: the try number of its next step (1-based).
        wake_at: its next step's retry is not before this (epoch seconds).
        failed: the branch failed for good.
        running: its next step is being run now (held in memory only: a run read
            back from the store runs nothing).
    """

    done: int = 0
    attempt: int = 1
    wake_at: float | None = None
    failed: bool = False
    running: bool = False


@attrs.frozen
class Forking:
    """A parallel transition in progress.

    Attributes:
        transition: the parallel transition.
        seq: the run's transition count when the fork began (in every branch step's
            idempotency key, so a retried or recovered step keeps its key).
        branches: each branch's progress, in declaration order.
        error: the failure that stops the fork (a branch failed for good, the
            deadline, a cancel): no new branch step starts, and once nothing runs
            any more the run compensates (or, bound, fails).
    """

    transition: str
    seq: int
    branches: tuple[BranchProgress, ...]
    error: ErrorInfo | None = None

    @property
    def in_flight(self) -> bool:
        """A branch step is being run now."""
        return any(b.running for b in self.branches)

    def with_branch(self, index: int, progress: BranchProgress) -> Forking:
        """This fork with branch ``index``'s progress replaced."""
        branches = list(self.branches)
        branches[index] = progress
        return attrs.evolve(self, branches=tuple(branches))

    def for_retry(self) -> Forking:
        """This fork, its failed branches ready to try their step again (a failed run's retry)."""
        branches = tuple(
            attrs.evolve(b, failed=False, attempt=1, wake_at=None, running=False)
            if b.failed
            else attrs.evolve(b, running=False)
            for b in self.branches
        )
        return attrs.evolve(self, branches=branches, error=None)


@attrs.frozen
class RunBranches:
    """Start these branch steps now, beside those already running; report each as it ends.

    ``until``: when a branch waiting for a retry is due; if nothing finishes by
    then, ask the interpreter again (``decide``) so that it starts.
    """

    transition: str
    start: tuple[RunStep, ...]
    until: float | None = None


@attrs.frozen
class BranchSucceeded:
    """Branch step ``step`` returned ``data`` (``None``: no change) after being given ``given``."""

    step: str
    data: Any = None
    given: Any = None


@attrs.frozen
class BranchFailed:
    """Branch step ``step`` raised or timed out."""

    step: str
    error: ErrorInfo
