"""``SagaStateMachine``: a hypothesis rule-based state machine over many runs of a saga.

Subclass it, name the saga, its inputs and (optionally) the entity key, the
domain ``setup`` and ``invariant``; hypothesis then interleaves starts,
events, cancels, injected faults (crashes included) and clock moves across
many runs on one store. When it stops, every run is driven to a terminal
state and the saga invariants and the domain invariant are checked::

    class CheckoutMachine(SagaStateMachine):
        saga = Checkout
        inputs = st.builds(Cart, cart_id=st.sampled_from(["a", "b"]))
        key = staticmethod(cart_key)
        setup = staticmethod(fresh_shop)
        invariant = staticmethod(shop_invariant)

    TestCheckout = CheckoutMachine.TestCase
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
from hypothesis.stateful import invariant as always

from statesaga.definition import Definition
from statesaga.errors import (
    CancelNotAllowed,
    ConcurrencyError,
    DuplicateStart,
    EventNotAllowed,
    StoreError,
)
from statesaga.testing._faults import instrument
from statesaga.testing._harness import _Harness
from statesaga.testing._outcome import Crash, Outcome
from statesaga.testing.driver import _finish
from statesaga.testing.invariants import check_domain_invariant, check_saga_invariants
from statesaga.testing.plans import STEP_FAULTS, UNDO_FAULTS, Fault, FaultPlan

__all__ = ["SagaStateMachine"]


def _names(saga: Any) -> tuple[list[str], list[str], list[str]]:
    definition: Definition = saga if isinstance(saga, Definition) else saga.definition
    with_steps = {**definition.transitions, **definition.branch_steps}
    steps = sorted(n for n, t in with_steps.items() if t.step is not None)
    undos = sorted(f"{n}.undo" for n, t in with_steps.items() if t.compensatable)
    events = sorted({t.event for t in definition.transitions.values() if t.event is not None})
    return steps, undos, events


def _faults(draw: Callable[..., Any], saga: Any) -> Fault:
    steps, undos, _ = _names(saga)
    kinds = [k for k in STEP_FAULTS if k not in ("duplicate_start", "lease_loss")]
    choices = [st.tuples(st.sampled_from(steps), st.sampled_from(kinds))] if steps else []
    if undos:
        choices.append(st.tuples(st.sampled_from(undos), st.sampled_from(UNDO_FAULTS)))
    target, kind = draw(st.one_of(choices))
    return Fault(target, kind, draw(st.integers(1, 2)))


class SagaStateMachine(RuleBasedStateMachine):
    """Interleave many runs of ``saga`` with faults, events, cancels and time.

    Class attributes to set:
        saga: the saga class (or definition) under test.
        inputs: a strategy of its inputs.
        key: a function of the input giving the entity key (default: none).
        setup: makes a fresh domain (``Outcome.world``) per test case; given the
            database URL if it takes an argument.
        invariant: the domain invariant, called with the final ``Outcome``.
        payloads: the payload of each event, if its type has no default (a value,
            or a function of the run it is sent to).
        resources: what the engines hand the steps, or a function of the world.
    """

    saga: ClassVar[Any] = None
    inputs: ClassVar[st.SearchStrategy[Any]] = st.nothing()
    key: ClassVar[Callable[[Any], str | None] | None] = None
    setup: ClassVar[Callable[..., Any] | None] = None
    invariant: ClassVar[Callable[[Outcome], Any] | None] = None
    payloads: ClassVar[dict[str, Any]] = {}
    resources: ClassVar[Any] = None

    def __init__(self) -> None:
        super().__init__()
        if self.saga is None:
            raise TypeError(f"{type(self).__name__} must set `saga = YourSaga`")
        saga = type(self).saga
        self.definition: Definition = saga if isinstance(saga, Definition) else saga.definition
        cls = type(self)
        self.directory = tempfile.mkdtemp(prefix="statesaga-machine-")
        from statesaga.testing.driver import FakeClock, _set_up

        database = f"sqlite:///{os.path.join(self.directory, 'machine.db')}"
        self.world = _set_up(cls.setup, database)
        given = cls.resources(self.world) if callable(cls.resources) else cls.resources
        self.harness = _Harness(
            self.definition,
            FaultPlan(),
            database,
            FakeClock(),
            None,
            None,
            dict(cls.payloads),
            resources=tuple(given or ()),
        )
        self.harness.driven = instrument(self.harness)
        self.engine = self.harness.engine()
        self.run_ids: list[str] = []

    def _crashed(self) -> None:
        self.harness.abandon(self.engine)
        self.engine = self.harness.engine()

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        """Start a run of a drawn input (its key may be busy: that is fine)."""
        saga_input = data.draw(type(self).inputs, label="input")
        key_of = type(self).key
        self.harness.saga_input = saga_input
        self.harness.key = key_of(saga_input) if key_of is not None else None
        try:
            run = self.engine.start(self.definition.name, saga_input, key=self.harness.key)
            self.run_ids.append(run.id)
        except (ConcurrencyError, DuplicateStart, StoreError):  # busy, or a lost connection
            pass
        except Crash:
            self._crashed()

    @rule(data=st.data())
    def inject(self, data: st.DataObject) -> None:
        """Arm a fault (an error, a timeout or a crash) for the next calls of a step."""
        fault = _faults(data.draw, type(self).saga)
        h = self.harness
        h.plan = attrs.evolve(h.plan, faults=(*h.plan.faults, fault))
        h.left.append(fault.times)

    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        """Send an event to a run (it may not be waiting for it)."""
        _, _, events = _names(type(self).saga)
        if not events or not self.run_ids:
            return
        run_id = data.draw(st.sampled_from(self.run_ids), label="run")
        event = data.draw(st.sampled_from(events), label="event")
        try:
            payload = self.harness.payload(event, self.engine.get(run_id))
            self.engine.send(event, payload, instance_id=run_id)
        except (EventNotAllowed, ConcurrencyError, StoreError):
            pass
        except Crash:
            self._crashed()

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel a run (refused past its pivot or once it ended)."""
        if not self.run_ids:
            return
        run_id = data.draw(st.sampled_from(self.run_ids), label="run")
        try:
            self.engine.cancel(run_id)
        except (CancelNotAllowed, ConcurrencyError, StoreError):
            pass
        except Crash:
            self._crashed()

    @rule(seconds=st.sampled_from([1.0, 10.0, 60.0, 3600.0]))
    def tick(self, seconds: float) -> None:
        """Let time pass, then recover whatever is due."""
        self.harness.clock.advance(seconds)
        try:
            self.engine.recover()
        except StoreError:  # a lost connection: the run is recovered at a later tick
            pass
        except Crash:
            self._crashed()

    @always()
    def one_open_run_per_key(self) -> None:
        keys = [r.key for r in self.engine.list(limit=1000) if r.key and r.status.is_open]
        assert len(keys) == len(set(keys)), f"two open runs on one key: {sorted(keys)}"

    def teardown(self) -> None:
        try:
            # the plan's faults are used up or dropped: finish every run as an operator would
            h = self.harness
            h.left = [0 for _ in h.left]
            runs = _finish(h, self.engine)
            outcome = Outcome(
                self.definition, h.plan, runs, tuple(h.journal), self.world, tuple(h.notes)
            )
            check_saga_invariants(outcome)
            check_domain_invariant(outcome, type(self).invariant)
        finally:
            for engine in self.harness.engines:
                with contextlib.suppress(Exception):
                    engine.close()
            shutil.rmtree(self.directory, ignore_errors=True)
