"""The saga every runtime benchmark runs: five read-only no-op steps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

# run from a checkout without installing: the repository root holds the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statesaga import Saga, State

__all__ = ["STEPS", "FiveSteps", "Nothing"]

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
