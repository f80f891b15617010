"""The sagas the PostgreSQL fault tests drive, shared by the test process and its children.

- ``Storm`` parks in a waiting state at once, so the first run on a key stays
  open and every later start on that key meets it;
- ``Fence`` runs one step (transactional or not) that a test can pause, then
  finishes: the step of a stale holder is where its late write comes from;
- ``Ledgered`` writes an effect row in its first step's own transaction, then
  runs two plain steps: the transitions a test kills the connection under;
- ``Drain`` parks for a moment (so that a setup can leave hundreds of runs
  due for workers), then writes an effect row in its first step's own
  transaction and runs two more steps, each pausing ``pause`` seconds.

Steps that write do so into ``fault_effects`` (no unique key: a duplicate
write would show as a second row), through ``ctx.connection``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga import Saga, State, StepContext

__all__ = [
    "EFFECTS_DDL",
    "Drain",
    "Fence",
    "FenceTransactional",
    "Job",
    "Ledgered",
    "Nothing",
    "Storm",
    "effect_rows",
]

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS fault_effects ("
    " id BIGSERIAL PRIMARY KEY,"
    " instance_id TEXT NOT NULL,"
    " step TEXT NOT NULL,"
    " writer TEXT NOT NULL)"
)


@attrs.define
class Nothing:
    """Input and context of the sagas that carry nothing."""


@attrs.define
class Job:
    """Input of ``Fence``, ``Ledgered`` and ``Drain``: how long their slow steps take."""

    pause: float = 0.0


def write_effect(ctx: StepContext[Any, Any], step: str) -> None:
    """Insert one effect row in the transition's own transaction, naming its writer.

    The writer is ``<pid>:<thread name>``: which process, and which thread in it.
    """
    writer = f"{os.getpid()}:{threading.current_thread().name}"
    ctx.connection.exec_driver_sql(
        "INSERT INTO fault_effects (instance_id, step, writer) VALUES (%s, %s, %s)",
        (ctx.instance_id, step, writer),
    )


def effect_rows(connection: sa.Connection) -> list[tuple[str, str, str]]:
    """Every effect row as ``(instance_id, step, writer)``, oldest first."""
    rows = connection.exec_driver_sql(
        "SELECT instance_id, step, writer FROM fault_effects ORDER BY id"
    )
    return [(row[0], row[1], row[2]) for row in rows]


# -- the storm ---------------------------------------------------------------------------------


class Storm(Saga[Nothing, Nothing]):
    """Waits (an hour at most) for ``paid``: the first run on a key keeps it."""

    name = "fault-storm"

    new = State(initial=True)
    waiting = State(timeout=3600)
    done = State(final=True)

    wait = new.to(waiting)
    pay = waiting.to(done).on("paid")
    give_up = waiting.to(done).on_timeout()


# -- fencing -----------------------------------------------------------------------------------

Hook = Callable[[StepContext[Job, Nothing]], None]


class Fence(Saga[Job, Nothing]):
    """One step the test can pause (``Fence.hook``), transactional or not, then done.

    Its timeout (5 s, on the test's clock) is what a paused holder overruns:
    its lease is not renewed past it, so another engine may claim the run.
    """

    name = "fault-fence"
    hook: Hook | None = None

    new = State(initial=True)
    done = State(final=True)

    hold = new.to(done).run(lambda ctx: Fence.hold_step(ctx), read_only=True, timeout=5)

    @staticmethod
    def hold_step(ctx: StepContext[Job, Nothing]) -> None:
        """Write the effect row (when transactional), then let the hook pause the step."""
        if ctx.connection is not None:
            write_effect(ctx, "hold")
        if Fence.hook is not None:
            Fence.hook(ctx)


class FenceTransactional(Saga[Job, Nothing]):
    """``Fence`` with its step in the transition's own transaction."""

    name = "fault-fence-transactional"

    new = State(initial=True)
    done = State(final=True)

    hold = new.to(done).run(
        lambda ctx: Fence.hold_step(ctx), read_only=True, transactional=True, timeout=5
    )


# -- a connection killed mid-transition --------------------------------------------------------


def reserve(ctx: StepContext[Job, Nothing]) -> None:
    """The transactional step: its row commits with its transition or not at all."""
    write_effect(ctx, "reserve")


def noop(ctx: StepContext[Job, Nothing]) -> None:
    """A plain step: its transition commits on the engine's own connection."""


class Ledgered(Saga[Job, Nothing]):
    """reserve (transactional) -> charge -> ship, then done."""

    name = "fault-ledgered"

    new = State(initial=True)
    reserved = State()
    charged = State()
    done = State(final=True)

    reserve = new.to(reserved).run(reserve, read_only=True, transactional=True)
    charge = reserved.to(charged).run(noop, read_only=True)
    ship = charged.to(done).run(noop, read_only=True)


# -- workers killed while draining --------------------------------------------------------------


def drain_reserve(ctx: StepContext[Job, Nothing]) -> None:
    """Write the effect row in the transition's transaction, then take ``pause`` seconds."""
    write_effect(ctx, "reserve")
    time.sleep(ctx.input.pause)


def drain_pause(ctx: StepContext[Job, Nothing]) -> None:
    """Take ``pause`` seconds, like a call to another service."""
    time.sleep(ctx.input.pause)


class Drain(Saga[Job, Nothing]):
    """Parks 50 ms, then reserve (transactional) -> charge -> ship."""

    name = "fault-drain"

    new = State(initial=True)
    parked = State(timeout=0.05)
    woken = State()
    reserved = State()
    charged = State()
    done = State(final=True)

    park = new.to(parked)
    nudge = parked.to(woken).on("nudged")
    wake = parked.to(woken).on_timeout()
    reserve = woken.to(reserved).run(drain_reserve, read_only=True, transactional=True)
    charge = reserved.to(charged).run(drain_pause, read_only=True)
    ship = charged.to(done).run(drain_pause, read_only=True)
