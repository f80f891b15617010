"""Sync steps with a timeout run on threads the process reuses; a hung one holds up nobody."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest

from statesaga import Engine, Retry, Saga, State, Status, StepTimeout
from statesaga._step_threads import StepThreads


@attrs.define
class Call:
    name: str


@attrs.define
class Seen:
    threads: list[str] = attrs.Factory(list)


RAN_ON: list[threading.Thread] = []
HANG = threading.Event()


def call_out(ctx: Any) -> Seen:
    """What a step with a timeout does: an outgoing call (here: note the thread it is on)."""
    RAN_ON.append(threading.current_thread())
    if ctx.input.name == "hang":
        HANG.wait(30)
    return Seen([*ctx.data.threads, threading.current_thread().name])


class Timed(Saga[Call, Seen]):
    name = "timed"
    new = State(initial=True)
    done = State(final=True)
    call = new.to(done).run(call_out, read_only=True, timeout=0.5, retry=Retry(attempts=1))


@pytest.fixture
def engine() -> Any:
    RAN_ON.clear()
    HANG.clear()
    with Engine("sqlite://", sagas=[Timed]) as engine:
        yield engine
    HANG.set()


def test_one_call_after_another_reuses_the_thread(engine: Engine) -> None:
    first = engine.start(Timed, Call("a"))
    second = engine.start(Timed, Call("b"))

    assert (first.status, second.status) == (Status.COMPLETED, Status.COMPLETED)
    assert RAN_ON[0] is RAN_ON[1]
    assert RAN_ON[0] is not threading.current_thread()
    # named after the engine's thread, the step and the run while it runs it
    main = threading.current_thread().name
    assert first.data.threads == [f"{main}/call:{first.id[:8]}"]


def test_a_hung_call_holds_up_no_other(engine: Engine) -> None:
    hung = engine.start(Timed, Call("hang"))  # left running past its timeout

    after = engine.start(Timed, Call("b"))

    assert hung.status is Status.COMPENSATED
    assert hung.error is not None
    assert hung.error.type == StepTimeout.__name__
    assert after.status is Status.COMPLETED
    assert RAN_ON[1] is not RAN_ON[0]  # the hung one still has its thread
    HANG.set()


def test_what_a_call_raises_is_raised_to_its_caller() -> None:
    threads = StepThreads()

    def fail(_: object) -> None:
        raise ValueError("no")

    job = threads.submit(fail, None, name="failing")
    assert job.finished(timeout=10)
    with pytest.raises(ValueError, match="no"):
        job.result()
    # the thread is idle again, and takes the next call
    assert threads.idle == 1
    again = threads.submit(len, "ab", name="next")
    assert again.finished(timeout=10)
    assert again.result() == 2
