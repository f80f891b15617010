"""A fork's progress in the instance row's ``machine`` JSON, and back.

What each branch did is persisted with every transition of the fork, so a
run recovered mid-fork runs no completed branch step again. Whether a step
is running now is not persisted: a run read back from the store runs nothing.

>>> from statesaga.core import BranchProgress, Forking
>>> forking = Forking("book", 2, (BranchProgress(done=1), BranchProgress(attempt=2, wake_at=9.5)))
>>> stored = forking_json(forking)
>>> stored
{'t': 'book', 'seq': 2, 'b': [[1, 1, None, False], [0, 2, 9.5, False]]}
>>> forking_of(stored) == forking
True
"""

from __future__ import annotations

from typing import Any

from statesaga.core import BranchProgress, Forking
from statesaga.failures import decode as decode_error
from statesaga.failures import encode as encode_error

__all__ = ["forking_json", "forking_of"]


def forking_json(forking: Forking) -> dict[str, Any]:
    """The fork's progress as JSON (its running marks left out)."""
    stored: dict[str, Any] = {
        "t": forking.transition,
        "seq": forking.seq,
        "b": [[b.done, b.attempt, b.wake_at, b.failed] for b in forking.branches],
    }
    if forking.error is not None:
        stored["error"] = encode_error(forking.error)
    return stored


def forking_of(stored: dict[str, Any]) -> Forking:
    """The fork's progress from its JSON: nothing running."""
    error = stored.get("error")
    return Forking(
        stored["t"],
        int(stored["seq"]),
        tuple(
            BranchProgress(int(done), int(attempt), wake_at, bool(failed))
            for done, attempt, wake_at, failed in stored["b"]
        ),
        None if error is None else decode_error(error),
    )
