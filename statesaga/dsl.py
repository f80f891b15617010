"""The declarative surface: ``Saga``, ``State`` and transitions.

A saga is a class. States are ``State()`` attributes; transitions are
attributes built from them with ``source.to(target)`` and refined with
``.run(step, undo=...)``, ``.when(guard)``, ``.on(event)`` and friends.
The class is compiled and validated when it is created, so a malformed
saga fails at import time with a ``DefinitionError`` that names the fault.

>>> import attrs
>>> from statesaga import Saga, State
>>> @attrs.define
... class Order:
...     order_id: str
>>> @attrs.define
... class Data:
...     charged: bool = False
>>> def charge(ctx):
...     return attrs.evolve(ctx.data, charged=True)
>>> def refund(ctx):
...     return None
>>> class Pay(Saga[Order, Data]):
...     name = "pay"
...     new = State(initial=True)
...     paid = State(final=True)
...     charge = new.to(paid).run(charge, undo=refund)
>>> sorted(Pay.definition.states)
['new', 'paid']
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar, Generic, Self, TypeAlias

from typing_extensions import TypeVar

from statesaga.context import StepContext
from statesaga.definition import Definition
from statesaga.errors import DefinitionError
from statesaga.migration import Migration
from statesaga.parallel import Branch
from statesaga.retry import Retry, seconds

__all__ = [
    "Event",
    "Guard",
    "Saga",
    "State",
    "Step",
    "TimeoutOf",
    "Transition",
    "Undo",
    "event_name",
]

InputT = TypeVar("InputT")
DataT = TypeVar("DataT")
OutputT = TypeVar("OutputT", default=Any)
PayloadT = TypeVar("PayloadT", default=None)
I = TypeVar("I")  # noqa: E741 - the saga's input type, as in Saga[I, D]
D = TypeVar("D")

#: a step: ``step(ctx) -> new data | None``, sync or ``async``
Step: TypeAlias = Callable[[StepContext[I, D]], D | Awaitable[D | None] | None]
#: a compensation: called like its step; what it returns is ignored
Undo: TypeAlias = Callable[[StepContext[I, D]], object]
#: a guard: ``guard(ctx) -> bool``, sync or ``async``
Guard: TypeAlias = Callable[[StepContext[I, D]], bool | Awaitable[bool]]
#: a run's own timeout: ``timeout(ctx) -> seconds | timedelta | None``, sync or ``async``
TimeoutOf: TypeAlias = Callable[
    [StepContext[Any, Any]],
    float | timedelta | Awaitable[float | timedelta | None] | None,
]


class Event(Generic[PayloadT]):
    """An event a saga accepts, declared on the saga class with its payload type.

    Declaring events on the class lets mypy check what is sent:
    ``engine.send(Checkout.payment_succeeded, PaymentConfirmed(...))`` accepts a
    ``PaymentConfirmed`` (or a mapping of its fields, structured strictly) and
    rejects any other payload type.

    Args:
        name: the event's name on the wire (``engine.send("payment_succeeded")``);
            left out, the attribute name it is declared under.
        payload: the attrs class its payload is structured into; left out, the
            type argument of ``Event[Payload](...)``, or no payload at all.

    >>> import attrs
    >>> @attrs.define
    ... class PaymentConfirmed:
    ...     payment_id: str
    >>> class Shop:
    ...     payment_succeeded = Event[PaymentConfirmed]()
    ...     expired = Event("cart_expired")
    >>> Shop.payment_succeeded.name, Shop.payment_succeeded.payload.__name__
    ('payment_succeeded', 'PaymentConfirmed')
    >>> Shop.expired.name, Shop.expired.payload is None
    ('cart_expired', True)
    """

    def __init__(self, name: str | None = None, payload: type[PayloadT] | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise DefinitionError(
                f"event name {name!r} must be an identifier such as 'payment_succeeded'"
            )
        self._name = name
        self._payload = payload

    def __set_name__(self, owner: type, name: str) -> None:
        if self._name is None:
            self._name = name

    @property
    def name(self) -> str:
        """The event's name, as the store and ``engine.send`` know it."""
        if self._name is None:
            raise DefinitionError(
                "an Event() without a name must be declared as a class attribute of the saga, "
                "or named: Event('payment_succeeded')"
            )
        return self._name

    @property
    def payload(self) -> type[PayloadT] | None:
        """The payload's type, or ``None`` for an event that carries none."""
        if self._payload is not None:
            return self._payload
        # ``Event[P]()``: typing records the subscripted class on the instance
        args = typing.get_args(getattr(self, "__orig_class__", None))
        if args and args[0] is not type(None) and not _is_type_var(args[0]):
            return typing.cast("type[PayloadT]", args[0])
        return None

    def __repr__(self) -> str:
        payload = self.payload
        kind = "" if payload is None else f"[{payload.__name__}]"
        return f"Event{kind}({self._name!r})"


def event_name(event: str | Event[Any]) -> str:
    """The name of an event given as an :class:`Event` or as its name.

    >>> event_name("payment_succeeded"), event_name(Event("payment_succeeded"))
    ('payment_succeeded', 'payment_succeeded')
    """
    return event.name if isinstance(event, Event) else event


class State:
    """A state of a saga.

    Args:
        initial: the state every instance starts in (exactly one per saga).
        final: reaching it completes the saga (at least one per saga).
        timeout: for a waiting state (one left by events), how long to wait,
            as seconds or a ``timedelta``. When it passes, the state's
            ``.on_timeout()`` transition is taken if it has one; otherwise the
            saga compensates. Or a function of the run, ``timeout(ctx)``,
            returning seconds, a ``timedelta`` or ``None`` (no timeout): it is
            called when a run enters the state, and its answer is persisted as
            that wait's timeout (a supplier's confirmation window that comes
            with the order).

    >>> from datetime import timedelta
    >>> fixed = State(timeout=timedelta(hours=2))
    >>> per_run = State(timeout=lambda ctx: ctx.input.confirm_within)
    """

    def __init__(
        self,
        *,
        initial: bool = False,
        final: bool = False,
        timeout: float | timedelta | TimeoutOf | None = None,
    ) -> None:
        self.initial = initial
        self.final = final
        self.timeout = timeout
        self.names: list[str] = []
        self.owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.names.append(name)
        if self.owner is None:
            self.owner = owner

    @property
    def name(self) -> str:
        """The attribute name this state was declared under."""
        return self.names[0] if self.names else "<unnamed>"

    def to(self, target: State) -> Transition:
        """A transition from this state to ``target``."""
        if not isinstance(target, State):
            raise DefinitionError(
                f"{self.name}.to({target!r}): the target must be a State declared on the saga"
            )
        return Transition(self, target)

    def __repr__(self) -> str:
        return f"State({self.name!r})"


class Transition:
    """An edge between two states, built with ``State.to`` and refined by chaining.

    Without ``.on(...)`` or ``.on_timeout()`` a transition is *automatic*: it is
    taken as soon as its source state is reached (and its guard, if any, allows).
    """

    def __init__(self, source: State, target: State) -> None:
        self.source = source
        self.target = target
        self.names: list[str] = []
        self.step: Callable[..., Any] | None = None
        self.undo: Callable[..., Any] | None = None
        self.pivot = False
        self.read_only = False
        self.retry: Retry | None = None
        self.undo_retry: Retry | None = None
        self.timeout: float | timedelta | None = None
        self.transactional = False
        self.undo_on_failure = False
        self.void: Callable[..., Any] | None = None
        self.guard: Callable[..., Any] | None = None
        self.guard_negated = False
        self.event: str | Event[Any] | None = None
        self.payload: type | None = None
        self.timeout_edge = False
        self.branches: dict[str, Branch] | None = None
        self.max_concurrency: int | None = None
        self.child_saga: Any = None
        self.child_output: Callable[..., Any] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.names.append(name)

    @property
    def name(self) -> str:
        """The attribute name this transition was declared under."""
        return self.names[0] if self.names else "<unnamed>"

    def run(
        self,
        step: Step[I, D],
        *,
        undo: Undo[I, D] | None = None,
        pivot: bool = False,
        read_only: bool = False,
        retry: Retry | None = None,
        undo_retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        transactional: bool = False,
        undo_on_failure: bool = False,
        void: Undo[I, D] | None = None,
    ) -> Self:
        """Run ``step`` when this transition is taken.

        Args:
            step: ``step(ctx: StepContext[I, D]) -> D | None``, sync or ``async``:
                it returns the saga's new context data, or ``None`` to keep it.
            undo: the compensation, ``undo(ctx: StepContext[I, D])``, called with
                the same kind of context when a later failure rolls the saga back.
            pivot: after this step succeeds the saga only goes forward: it is
                never compensated, nor is anything before it.
            read_only: the step has no side effect to undo (a validation, a read).
            retry: the step's retry policy (default ``Retry()``: 3 attempts).
            undo_retry: the compensation's retry policy (default 5 attempts).
            timeout: how long one attempt may take, seconds or ``timedelta``.
            transactional: the step receives the transition's database
                connection as ``ctx.connection``; its writes commit atomically
                with the transition, exactly once.
            undo_on_failure: the step's effect may be partial or unknown when it
                fails (a timed-out external call), so its own compensation runs
                too; that compensation must tolerate an effect that never happened.
            void: for a pivot, ``void(ctx)``: runs only when the pivot fails for good
                (retries spent on an unknown outcome, or an error after it may have
                taken effect), never after it succeeded; then the steps before the
                pivot are compensated. It must tolerate an effect that never
                happened (``ctx.idempotency_key`` is the pivot's, plus ``:undo``).
        """
        if self.step is not None:
            raise DefinitionError(
                f"transition {self.name!r} already runs {self.step!r}; "
                "a transition runs one step: split it into two transitions"
            )
        self.step = step
        self.undo = undo
        self.pivot = pivot
        self.read_only = read_only
        self.retry = retry
        self.undo_retry = undo_retry
        self.timeout = timeout
        self.transactional = transactional
        self.undo_on_failure = undo_on_failure
        self.void = void
        return self

    def parallel(self, *, max_concurrency: int | None = None, **branches: Branch) -> Self:
        """Run ``branches`` concurrently when this transition is taken; join when all succeed.

        See :mod:`statesaga.parallel`: each :class:`~statesaga.Branch` is a step or a
        short chain, persisted step by step (``"<transition>.<branch>"`` in the
        history); when one fails for good the others are awaited and every branch
        step that took effect is compensated, in reverse. ``max_concurrency``
        bounds how many branch steps run at once (default: all).
        """
        if self.branches is not None:
            raise DefinitionError(
                "this transition already runs branches; pass every branch to one .parallel(...)"
            )
        self.branches = dict(branches)
        self.max_concurrency = max_concurrency
        return self

    def child(
        self,
        saga: type[Saga[Any, Any, Any]],
        *,
        input: Callable[[StepContext[I, D]], Any],
        output: Callable[[StepContext[I, D], Any], D | None] | None = None,
        retry: Retry | None = None,
        timeout: float | timedelta | None = None,
    ) -> Self:
        """Start the saga ``saga`` as a child run when this transition is taken.

        The parent waits for the child's outcome without holding anything (it is
        released ``waiting`` while the child waits, and woken when the child ends);
        the child shares the parent's correlation id. When the child completes, the
        transition is taken; when it ends compensated or failed, the parent
        compensates. When the parent compensates after the child completed, the
        child's compensations run (it ends ``compensated``); cancelling the parent
        while the child runs cancels the child.

        Args:
            saga: the child :class:`Saga` class. It must declare no pivot (a child
                is compensated when its parent is).
            input: ``input(ctx) -> ChildInput``: the child's input, from the parent's
                context (sync or ``async``).
            output: ``output(ctx, child_output) -> D | None``: the parent's new context,
                given the child's output (left out: the context is kept).
            retry: the policy of making the input and starting the child.
            timeout: how long making the input may take.

        The child is started under an idempotency key derived from this step's
        (``"child:" + ctx.idempotency_key``): a parent that crashed after starting
        it finds the same child again, never a second one.
        """
        if self.step is not None:
            raise DefinitionError(
                f"transition {self.name!r} already runs {self.step!r}; a transition runs one "
                "step or starts one child saga: split it into two transitions"
            )
        self.step = input
        self.child_saga = saga
        self.child_output = output
        self.retry = retry
        self.timeout = timeout
        return self

    def when(self, guard: Guard[I, D]) -> Self:
        """Take this transition only if ``guard(ctx)`` is true.

        On an event transition (``.on(...)``) the guard judges the event
        (``ctx.event`` is its payload): an event it refuses is recorded as
        rejected, with the reason, and the run keeps waiting on its original
        timeout. Several transitions may take one event from one state when
        all but one are guarded: their guards are tried in declaration order,
        the unguarded one (if any) last, and the first that passes is taken.
        """
        self._set_guard(guard, negated=False)
        return self

    def unless(self, guard: Guard[I, D]) -> Self:
        """Take this transition only if ``guard(ctx)`` is false."""
        self._set_guard(guard, negated=True)
        return self

    def _set_guard(self, guard: Callable[..., Any], *, negated: bool) -> None:
        if self.guard is not None:
            raise DefinitionError(
                f"transition {self.name!r} already has a guard; combine the conditions "
                "in one guard function"
            )
        self.guard = guard
        self.guard_negated = negated

    def on(self, event: str | Event[Any], payload: type | None = None) -> Self:
        """Take this transition when the event ``event`` is sent to the instance.

        Args:
            event: an :class:`Event` declared on the saga (its payload type comes
                with it), or the event's name, as passed to ``engine.send``.
            payload: for an event given by name, the attrs class its payload is
                structured into; the step (if any) receives it as ``ctx.event``.
        """
        if isinstance(event, Event):
            if payload is not None:
                raise DefinitionError(
                    f"transition {self.name!r}: the Event {event!r} brings its payload type; "
                    "drop the payload argument of .on(...)"
                )
        elif not isinstance(event, str) or not event.isidentifier():
            raise DefinitionError(
                f"event name {event!r} on transition {self.name!r} must be an identifier "
                "such as 'payment_succeeded', or an Event declared on the saga"
            )
        self.event = event
        self.payload = payload
        return self

    def on_timeout(self) -> Self:
        """Take this transition when the source (waiting) state's timeout passes."""
        self.timeout_edge = True
        return self

    def __repr__(self) -> str:
        return f"Transition({self.name!r}: {self.source.name} -> {self.target.name})"


class Saga(Generic[InputT, DataT, OutputT]):
    """Base class of every saga. Subclass it as ``Saga[InputType, ContextType]``.

    The type arguments flow through the engines: ``engine.start(MySaga, ...)``
    takes an ``InputType`` (or a mapping of its fields) and returns a
    ``Run[InputType, ContextType, OutputType]``. A saga with an ``output``
    declares its type as a third argument, ``Saga[In, Data, Receipt]``
    (left out, ``run.output`` is typed ``Any``). The compiler checks, when the
    class is created, that the steps' ``StepContext[...]`` and return
    annotations agree with these types.

    Class attributes:
        name: the saga's name (required), used to register and find it.
        version: an integer, 1 by default; register several to let old
            instances finish on the graph they started on.
        deadline: default run deadline, seconds or a ``timedelta``; when it
            passes before the pivot, the saga compensates. Or a static method
            ``deadline(input)`` computing it when a run starts (seconds, a
            ``timedelta``, a ``datetime``, or ``None`` for the engine's default).
        refuse_early_events: ``True`` to record an event sent before the run
            waits for it as not accepted; by default it is kept in the run's
            inbox until a state takes it.
        migrates_from: a :class:`~statesaga.Migration` (or a tuple of them): how
            runs of an older version move onto this one (``engine.migrate``).
        definition: the compiled, validated :class:`~statesaga.Definition`
            (set when the class is created).

    Optional static methods:
        ``initial_context(input) -> Context``: the data an instance starts with
        (default: ``Context()``); ``output(input, data) -> Output``: the value
        a completed run returns (its return annotation types the output).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    deadline: ClassVar[float | timedelta | Callable[[Any], Any] | None] = None
    refuse_early_events: ClassVar[bool] = False
    migrates_from: ClassVar[Migration[Any, Any] | tuple[Migration[Any, Any], ...] | None] = None
    definition: ClassVar[Definition]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not _declares_states(cls) and "name" not in vars(cls):
            return  # an abstract base that only shares helpers
        from statesaga._compile import compile_saga

        input_type, context_type, output_type = _type_arguments(cls)
        cls.definition = compile_saga(cls, input_type, context_type, output_type)


def _declares_states(cls: type) -> bool:
    return any(isinstance(value, State) for klass in cls.__mro__ for value in vars(klass).values())


def _type_arguments(cls: type) -> tuple[Any, Any, Any]:
    """``(input, context, output)`` of ``Saga[...]``; output is ``None`` when not declared."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Saga:
                args = typing.get_args(base)
                if len(args) in (2, 3) and not any(_is_type_var(a) for a in args[:2]):
                    output = args[2] if len(args) == 3 and args[2] is not Any else None
                    return args[0], args[1], None if _is_type_var(output) else output
    saga = vars(cls).get("name", cls.__name__)
    raise DefinitionError(
        f"saga {saga!r}: declare its input and context types, as in "
        f"`class {cls.__name__}(Saga[MyInput, MyContext])`",
        saga=str(saga),
    )


def _is_type_var(value: Any) -> bool:
    return isinstance(value, typing.TypeVar) or type(value).__name__ == "TypeVar"


def duration(value: float | timedelta | None) -> float | None:
    """Seconds from a duration given as seconds or ``timedelta`` (``None`` stays ``None``)."""
    return None if value is None else seconds(value)
