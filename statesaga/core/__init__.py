"""The interpreter: a pure, I/O-free state machine over a saga definition.

Given a :class:`~statesaga.definition.Definition`, an instance :class:`Snapshot`
and the outcome of the last action, :meth:`Interpreter.next` returns a
:class:`Next`: the new snapshot, the history records the driver must persist
with it (in one transaction), and the :data:`Decision` to carry out next.
All of statesaga's semantics live here; the engines only perform the I/O the
interpreter asks for. Nothing here imports SQL, Redis or asyncio, and time and
randomness come in as arguments.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class In:
...     n: int = 0
>>> @attrs.define
... class Data:
...     done: bool = False
>>> class Demo(Saga[In, Data]):
...     name = "demo"
...     new = State(initial=True)
...     done = State(final=True)
...     finish = new.to(done).run(lambda ctx: Data(done=True), read_only=True)
>>> core = Interpreter(Demo.definition)
>>> first = core.start("i-1", In(), Data(), now=0.0)
>>> first.decision.transition, first.decision.idempotency_key, first.decision.completes
('finish', 'i-1:0:finish', True)
>>> last = core.next(first.snapshot, StepSucceeded(Data(done=True)), now=1.0)
>>> last.snapshot.status, last.snapshot.state, [r.kind for r in last.records]
(<Status.COMPLETED: 'completed'>, 'done', [<HistoryKind.FORWARD: 'forward'>])
"""

from statesaga.core._children import (
    ChildOutcome,
    ChildWaiting,
    CompensateRequested,
    child_event,
    child_event_id,
    child_key,
    child_transition,
    parent_of,
)
from statesaga.core._interpreter import Interpreter
from statesaga.core._migrate import Migrated, MigrationFit, Migrator
from statesaga.core._operator import RESOLVE_OUTCOMES, resolve_request
from statesaga.core._parallel_types import (
    BranchFailed,
    BranchProgress,
    BranchSucceeded,
    Forking,
    RunBranches,
)
from statesaga.core._rules import due_when_let_go
from statesaga.core._types import ACCEPT as ACCEPT  # the verdicts of EventFit
from statesaga.core._types import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    UNDO_SUFFIX,
    BranchChosen,
    CancelRequested,
    ChooseBranch,
    CompensationFailed,
    CompensationSucceeded,
    Decision,
    Done,
    ErrorInfo,
    ErrorKind,
    EventArrived,
    EventFit,
    EventJudged,
    Finish,
    HistoryKind,
    JudgeEvent,
    MeasureTimeout,
    Next,
    Outcome,
    Record,
    ResolveRequested,
    RetryRequested,
    RunCompensation,
    RunStep,
    Sleep,
    Snapshot,
    Status,
    StepFailed,
    StepSucceeded,
    TimeoutMeasured,
    Wait,
    idempotency_key,
    undo_name,
)
from statesaga.core._types import EARLY as EARLY
from statesaga.core._types import LATE as LATE

__all__ = [
    "BranchChosen",
    "BranchFailed",
    "BranchProgress",
    "BranchSucceeded",
    "Forking",
    "RunBranches",
    "ChildOutcome",
    "ChildWaiting",
    "CompensateRequested",
    "child_event",
    "child_event_id",
    "child_key",
    "child_transition",
    "parent_of",
    "CancelRequested",
    "ChooseBranch",
    "CompensationFailed",
    "CompensationSucceeded",
    "Decision",
    "Done",
    "ErrorInfo",
    "ErrorKind",
    "EventArrived",
    "EventFit",
    "EventJudged",
    "Finish",
    "HistoryKind",
    "Interpreter",
    "JudgeEvent",
    "MeasureTimeout",
    "Migrated",
    "MigrationFit",
    "Migrator",
    "Next",
    "Outcome",
    "Record",
    "ResolveRequested",
    "RetryRequested",
    "RunCompensation",
    "RunStep",
    "Sleep",
    "Snapshot",
    "Status",
    "StepFailed",
    "StepSucceeded",
    "TimeoutMeasured",
    "Wait",
    "CLOSED_STATUSES",
    "OPEN_STATUSES",
    "RESOLVE_OUTCOMES",
    "TERMINAL_STATUSES",
    "resolve_request",
    "UNDO_SUFFIX",
    "due_when_let_go",
    "idempotency_key",
    "undo_name",
]
