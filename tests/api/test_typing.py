"""Misuse of the typed API is a type error: real ``mypy --strict`` on small modules.

``MISTAKES`` holds seven classic mistakes (the issue's six, and an event's payload of
the wrong type), each marked ``# E: <part of the error>``
on the line mypy must report; ``HAPPY`` is correct code whose types are pinned
with ``typing.assert_type`` and must draw no error at all (it also runs, for real).
Both are checked with the ``statesaga.mypy`` plugin enabled, as the docs advise.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

MISTAKES = """\
from __future__ import annotations

import attrs

from statesaga import Engine, Event, Saga, State, StepContext


@attrs.frozen
class Cart:
    cart_id: str


@attrs.frozen
class Paid:
    payment_id: str


@attrs.frozen
class Checkout:
    total: int = 0


@attrs.frozen
class Other:
    nothing: str = ""


def price(ctx: StepContext[Cart, Checkout]) -> Checkout:
    return Checkout(total=1)


def wrong_context(ctx: StepContext[Other, Other]) -> None:
    return None


def wrong_return(ctx: StepContext[Cart, Checkout]) -> str:
    return "done"


def two_arguments(ctx: StepContext[Cart, Checkout], extra: int) -> None:
    return None


class Good(Saga[Cart, Checkout]):
    name = "good"
    new = State(initial=True)
    priced = State()
    done = State(final=True)
    first = new.to(priced).run(wrong_context, read_only=True)  # E: but saga Good calls
    second = priced.to(done).run(price, undo=two_arguments)  # E: Argument "undo" to "run"


class Finish(Saga[Cart, Checkout]):
    name = "finish"
    new = State(initial=True)
    done = State(final=True)
    finish = new.to(done).run(wrong_return)  # E: step "wrong_return" returns "str"


class Waits(Saga[Cart, Checkout]):
    name = "waits"
    paid = Event[Paid]()
    new = State(initial=True)
    done = State(final=True)
    arrive = new.to(done).on(paid)


def use(engine: Engine) -> None:
    engine.send(Waits.paid, Paid("p-1"), instance_id="i-1")
    engine.send(Waits.paid, Other(), instance_id="i-1")  # E: "P" of "send" of "Engine"
    engine.start(Good, Other())  # E: "start" of "Engine"
    run = engine.start(Good, Cart("c-1"))
    print(run.data.no_such_field)  # E: "Checkout" has no attribute "no_such_field"
    count: int = run.data  # E: (expression has type "Checkout", variable has type "int")
    print(count)
"""

HAPPY = """\
from __future__ import annotations

import asyncio
from typing import Any, assert_type

import attrs

from statesaga import AsyncEngine, Engine, Event, Run, Saga, State, StepContext


@attrs.frozen
class Cart:
    cart_id: str


@attrs.frozen
class Checkout:
    total: int = 0
    paid: bool = False


@attrs.frozen
class Receipt:
    order_id: str


@attrs.frozen
class PaymentConfirmed:
    payment_id: str


Ctx = StepContext[Cart, Checkout]


def price(ctx: Ctx) -> Checkout:
    assert_type(ctx.input, Cart)
    assert_type(ctx.data, Checkout)
    return attrs.evolve(ctx.data, total=3)


async def reserve(ctx: Ctx) -> None:
    return None


def release(ctx: Ctx) -> None:
    return None


def is_free(ctx: Ctx) -> bool:
    return ctx.data.total == 0


def pay(ctx: Ctx) -> Checkout:
    return attrs.evolve(ctx.data, paid=True)


class Shop(Saga[Cart, Checkout, Receipt]):
    name = "shop"
    payment_succeeded = Event[PaymentConfirmed]()

    new = State(initial=True)
    priced = State()
    reserved = State()
    waiting = State()
    done = State(final=True)

    price = new.to(priced).run(price, read_only=True)
    reserve = priced.to(reserved).run(reserve, undo=release)
    free = reserved.to(done).when(is_free)
    charge = reserved.to(waiting).unless(is_free)
    paid = waiting.to(done).on(payment_succeeded).run(pay, pivot=True)

    @staticmethod
    def output(saga_input: Cart, data: Checkout) -> Receipt:
        return Receipt(f"order-{saga_input.cart_id}")


assert_type(Shop.payment_succeeded, Event[PaymentConfirmed])


def use(engine: Engine) -> None:
    run = engine.start(Shop, Cart("c-1"))
    assert_type(run, Run[Cart, Checkout, Receipt])
    assert_type(run.input, Cart)
    assert_type(run.data, Checkout)
    assert_type(run.output, Receipt | None)
    by_mapping = engine.start(Shop, {"cart_id": "c-2"})
    assert_type(by_mapping, Run[Cart, Checkout, Receipt])
    assert_type(engine.get(run.id), Run[Any, Any, Any])
    assert_type(engine.get(run.id, saga=Shop), Run[Cart, Checkout, Receipt])
    assert_type(engine.list(), list[Run[Any, Any, Any]])
    assert_type(engine.list(saga="shop"), list[Run[Any, Any, Any]])
    assert_type(engine.list(saga=Shop), list[Run[Cart, Checkout, Receipt]])
    assert run.data.total == 3 and run.state == "waiting"
    assert engine.get(run.id, saga=Shop).data.total == 3
    assert [r.id for r in engine.list(saga=Shop)] == [by_mapping.id, run.id]


async def use_async(engine: AsyncEngine) -> None:
    run = await engine.start(Shop, Cart("c-3"))
    assert_type(run, Run[Cart, Checkout, Receipt])
    assert_type(engine.get(run.id, saga=Shop).data, Checkout)


def main() -> None:
    with Engine("sqlite://") as engine:
        use(engine)

    async def run_async() -> None:
        async with AsyncEngine("sqlite://") as engine:
            await use_async(engine)

    asyncio.run(run_async())
"""

MYPY_INI = """\
[mypy]
strict = True
plugins = statesaga.mypy
"""


def _mypy(tmp: Path, *modules: str) -> list[tuple[str, int, str]]:
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
            pytest.fail("mypy is not installed; STATESAGA_REQUIRE_SERVICES=1 makes this a failure")
        pytest.skip("mypy is not installed")
    (tmp / "mypy.ini").write_text(MYPY_INI)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp / ".mypy_cache"),
            "--no-error-summary",
            "--hide-error-context",
            "--show-error-codes",
            *modules,
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr + completed.stdout
    found = []
    for line in completed.stdout.splitlines():
        match = re.match(r"(?P<file>[^:]+):(?P<line>\d+): (?P<level>\w+): (?P<text>.*)", line)
        assert match is not None, line
        if match["level"] == "error":
            found.append((match["file"], int(match["line"]), match["text"]))
    return found


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, int, str]]:
    """Every error mypy reports on both modules, checked together in one run."""
    tmp = tmp_path_factory.mktemp("typing")
    (tmp / "mistakes.py").write_text(MISTAKES)
    (tmp / "happy.py").write_text(HAPPY)
    return _mypy(tmp, "mistakes.py", "happy.py")


def _expected(source: str) -> dict[int, str]:
    return {
        number: line.split("# E: ", 1)[1]
        for number, line in enumerate(source.splitlines(), start=1)
        if "# E: " in line
    }


def test_the_seven_mistakes_are_each_reported_on_their_line(
    reported: list[tuple[str, int, str]],
) -> None:
    expected = _expected(MISTAKES)
    assert len(expected) == 7
    errors = [(line, text) for file, line, text in reported if file == "mistakes.py"]
    for line, fragment in expected.items():
        assert any(n == line and fragment in text for n, text in errors), (line, fragment, errors)
    stray = [(n, text) for n, text in errors if n not in expected]
    assert stray == []


def test_correct_code_draws_no_error_and_its_types_are_the_saga_s(
    reported: list[tuple[str, int, str]],
) -> None:
    assert [error for error in reported if error[0] == "happy.py"] == []


def test_the_correct_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "typed_happy_path.py").write_text(HAPPY)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("typed_happy_path")
    module.main()
