"""Declared migrations: how runs of an older version of a saga move onto a newer one.

A new version declares, as its ``migrates_from`` class attribute, the older
class its runs come from, where each of that graph's open states lands, and
(when the context changed) a function from the old context to the new one.
The declaration is checked when the new class is defined; ``engine.migrate``
(and ``statesaga migrate``) then moves the waiting and due runs, each in its
own transaction, with a ``migrated`` history record.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.frozen
... class Cart:
...     cart_id: str
>>> @attrs.frozen
... class Data:
...     reserved: bool = False
>>> @attrs.frozen
... class DataV2:
...     reserved: bool = False
...     screened: bool = False
>>> def reserve(ctx): ...
>>> def release(ctx): ...
>>> class CheckoutV1(Saga[Cart, Data]):
...     name = "checkout"
...     new = State(initial=True)
...     reserved = State()
...     done = State(final=True)
...     reserve = new.to(reserved).run(reserve, undo=release)
...     pay = reserved.to(done).on("paid")
>>> def upgrade(old: Data) -> DataV2:
...     return DataV2(reserved=old.reserved)
>>> class CheckoutV2(Saga[Cart, DataV2]):
...     name = "checkout"
...     version = 2
...     migrates_from = Migration(CheckoutV1, states={"reserved": "awaiting_payment"},
...                               context=upgrade)
...     new = State(initial=True)
...     awaiting_payment = State()
...     done = State(final=True)
...     reserve = new.to(awaiting_payment).run(reserve, undo=release)
...     pay = awaiting_payment.to(done).on("paid")
>>> plan = CheckoutV2.definition.migrations[1]
>>> dict(plan.states)
{'new': 'new', 'reserved': 'awaiting_payment'}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic

import attrs
from typing_extensions import TypeVar

if TYPE_CHECKING:
    from statesaga.dsl import Saga

__all__ = ["Migration", "MigrationEntry", "MigrationReport"]

OldData = TypeVar("OldData", default=Any)
NewData = TypeVar("NewData", default=Any)


class Migration(Generic[OldData, NewData]):
    """How runs of an older version of a saga map onto the version that declares it.

    Declare it on the new version's class as ``migrates_from = Migration(...)``
    (or a tuple of them, one per older version). It names the older *class*,
    not just its version number, so that the mapping is checked against both
    graphs when the new class is defined.

    Args:
        source: the older version's saga class (same ``name``, a lower ``version``).
        states: where runs waiting (or due) in an old state land, ``{"old": "new"}``.
            An old state left out lands in the new state of the same name; every
            open (non-final) state of the old graph must land somewhere.
        transitions: the new names of renamed transitions, ``{"old": "new"}``, for
            the steps a moved run may still have to compensate (or is about to
            retry). Left out, a transition keeps its name.
        context: ``context(old_data) -> new_data``: the new context from the old
            one, a plain function of the data (it may run more than once: in a
            dry run, and again for real). Its result is structured strictly into
            the new context type (an instance of it or a mapping of its fields).
            Left out, the stored context is structured into the new context type
            as it is (enough when the new type only adds fields with defaults).
    """

    def __init__(
        self,
        source: type[Saga[Any, OldData, Any]],
        *,
        states: Mapping[str, str] | None = None,
        transitions: Mapping[str, str] | None = None,
        context: Callable[[OldData], NewData | Mapping[str, Any]] | None = None,
    ) -> None:
        self.source = source
        self.states = dict(states or {})
        self.transitions = dict(transitions or {})
        self.context = context

    def __repr__(self) -> str:
        name = getattr(self.source, "__name__", repr(self.source))
        return f"Migration({name}, states={self.states!r})"


@attrs.frozen
class MigrationEntry:
    """What a migration did (or, in a dry run, would do) with one run.

    ``outcome`` is ``"moved"`` (``"would move"`` in a dry run), ``"skipped"``
    (the run may not move now: ``reason`` says why, and it stays on its version)
    or ``"failed"`` (the context function or the new context type refused its
    data: ``reason`` holds the error; the run was left as it was).
    """

    instance_id: str
    status: str
    from_state: str
    to_state: str | None
    outcome: str
    reason: str | None = None


@attrs.frozen
class MigrationReport:
    """The runs a migration looked at, and what became of each.

    >>> report = MigrationReport("checkout", 1, 2, dry_run=True, entries=())
    >>> report.moved, report.skipped, report.failed
    ((), (), ())
    """

    saga: str
    from_version: int
    to_version: int
    dry_run: bool
    entries: tuple[MigrationEntry, ...]

    @property
    def moved(self) -> tuple[MigrationEntry, ...]:
        """The runs moved (in a dry run: that would move)."""
        return tuple(e for e in self.entries if e.outcome in ("moved", "would move"))

    @property
    def skipped(self) -> tuple[MigrationEntry, ...]:
        """The runs that may not move now (held by a live lease, compensating, failed...)."""
        return tuple(e for e in self.entries if e.outcome == "skipped")

    @property
    def failed(self) -> tuple[MigrationEntry, ...]:
        """The runs whose context could not be migrated; each was left as it was."""
        return tuple(e for e in self.entries if e.outcome == "failed")
