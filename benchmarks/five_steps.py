"""The saga every runtime benchmark runs: five read-only no-op steps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statesaga import Saga, State

__all__ = ["STEPS", "FiveSteps", "Nothing", "instance_values", "machine_json"]

STEPS = 5


@attrs.frozen
class Nothing:
    """Input and context of the benchmark saga: nothing to carry."""


def noop(ctx: Any) -> None:
    """A step that does nothing and keeps the data."""


class FiveSteps(Saga[Nothing, Nothing]):
    """s0 -> s1 -> ... -> s5, one read-only no-op step per transition."""

    name = "bench-five-steps"

    s0 = State(initial=True)
    s1 = State()
    s2 = State()
    s3 = State()
    s4 = State()
    s5 = State(final=True)
    t1 = s0.to(s1).run(noop, read_only=True)
    t2 = s1.to(s2).run(noop, read_only=True)
    t3 = s2.to(s3).run(noop, read_only=True)
    t4 = s3.to(s4).run(noop, read_only=True)
    t5 = s4.to(s5).run(noop, read_only=True)


# -- what the engine writes for a run of FiveSteps, for the raw floors beside it ----------------


def machine_json(seq: int) -> str:
    """The ``machine`` column the store writes after ``seq`` steps (compact, as the store's)."""
    pending = f"t{seq + 1}" if seq < STEPS else None
    return json.dumps(
        {
            "pending": pending,
            "wake_at": None,
            "stack": [],
            "pivoted": False,
            "seq": seq,
            "event": None,
        },
        separators=(",", ":"),
    )


def instance_values(instance_id: str, now: float, owner: str) -> dict[str, Any]:
    """The instance row the store inserts when a FiveSteps run starts, by column."""
    return {
        "id": instance_id, "saga": FiveSteps.name, "saga_version": 1,
        "graph_hash": "0" * 16, "entity_key": None, "idempotency_key": None,
        "correlation_id": instance_id, "state": "s0", "status": "running",
        "input": "{}", "context": "{}", "output": None, "machine": machine_json(0),
        "error": None, "attempt": 1, "version": 1, "epoch": 1, "lease_owner": owner,
        "lease_expires_at": now + 30, "due_at": None, "deadline": None,
        "created_at": now, "updated_at": now, "trace_context": None,
    }  # fmt: skip
