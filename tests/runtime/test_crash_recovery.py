"""Crash recovery: a process killed with SIGKILL at any boundary leaves work any engine finishes.

A child process (``crash_child.py``) runs the four-step ``CrashCheckout``
(``crash_saga.py``): a transactional reservation, an external charge carrying
its idempotency key, a pivot, a notification. It kills itself with
``SIGKILL`` at one boundary: before a step, after a step but before its
transition commits, between a transition's statements and its COMMIT, right
after the COMMIT, or inside a compensation. Once its lease has expired, a
fresh engine in this process recovers, and the test checks that:

- the instance ended ``completed`` or ``compensated``, as its input decides;
- the reservation written in the transition's own transaction exists exactly
  once (and is released after compensation);
- the history holds one row per persisted transition, in order: versions
  grow by one per transition, plus one per claim (each claim bumps the
  epoch, so a gap in versions is always a recovery);
- the external service saw duplicate calls only where a step ran but its
  transition never committed, and every duplicate carries the same
  idempotency key;
- the instance was claimed exactly once by the recovering engine.

A recovery killed in its turn is recovered by the next. Twenty abandoned
instances recovered by two processes at once are each resumed by exactly one
of them; two in-process tests pin the interleavings behind that promise (a
run finished by another engine since it was listed is skipped; a claim that
finds nothing to run lets the run go).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from crash_saga import ABANDON_AT, CrashCheckout, Ledger, read_effects

from statesaga import Engine, Saga, State, Status
from statesaga.run import Run
from statesaga.store.base import InstanceRow

HERE = Path(__file__).resolve().parent
CHILD = HERE / "crash_child.py"
LEASE_TTL = 0.5

COMPLETED_PATH = [
    ("start", None, "new", "new"),
    ("forward", "reserve", "new", "reserved"),
    ("forward", "charge", "reserved", "charged"),
    ("forward", "ship", "charged", "shipped"),
    ("forward", "notify", "shipped", "done"),
]
# a crash while the pivot was pending: it may have taken effect, so when it then fails the
# run stops, visible, instead of compensating what came before it
BOUND_PATH = [*COMPLETED_PATH[:3], ("failure", "ship", "charged", "charged")]
COMPENSATED_PATH = [
    *COMPLETED_PATH[:3],
    ("failure", "ship", "charged", "charged"),
    ("compensate", "charge", "charged", "reserved"),
    ("compensate", "reserve", "reserved", "new"),
]


@attrs.frozen
class Case:
    """Where the child dies, and what the external service should have seen in the end."""

    boundary: str
    fail: bool = False
    duplicated: str | None = None
    """The call made twice: its step ran, but its transition never committed."""
    finished_before_recovery: bool = False
    bound: bool = False
    """Killed with the pivot pending: on recovery it may have taken effect."""
    idempotent: bool = False
    """Started with an idempotency key: the start commits before the first step runs."""

    @property
    def id(self) -> str:
        return (
            f"{self.boundary}{'-failing' if self.fail else ''}"
            f"{'-idempotent' if self.idempotent else ''}"
        )

    @property
    def status(self) -> Status:
        if self.bound:
            return Status.FAILED
        return Status.COMPENSATED if self.fail else Status.COMPLETED

    def calls(self) -> dict[str, int]:
        if self.bound:
            counts = {"charge": 1, "refund": 0, "ship": 0, "notify": 0}
        elif self.fail:
            counts = {"charge": 1, "refund": 1, "ship": 0, "notify": 0}
        else:
            counts = {"charge": 1, "refund": 0, "ship": 1, "notify": 1}
        if self.duplicated is not None:
            counts[self.duplicated] = 2
        return counts


CASES = [
    # the happy path, killed at every boundary of every step
    Case("committed:start"),  # with the first step's transition: both committed
    # the start committed on its own (an idempotency key), then killed in the first step
    Case("committed:start", idempotent=True),
    Case("before:reserve", idempotent=True),
    Case("after:reserve", idempotent=True),  # its uncommitted row must vanish with the process
    Case("uncommitted:reserve", idempotent=True),
    Case("committed:reserve"),
    Case("before:charge"),
    Case("after:charge", duplicated="charge"),
    Case("uncommitted:charge", duplicated="charge"),
    Case("committed:charge"),
    Case("before:ship"),
    Case("after:ship", duplicated="ship"),
    Case("uncommitted:ship", duplicated="ship"),
    Case("committed:ship"),  # past the pivot: recovery must go forward
    Case("before:notify"),
    Case("after:notify", duplicated="notify"),
    Case("uncommitted:notify", duplicated="notify"),
    Case("committed:notify", finished_before_recovery=True),
    # shipping fails before the pivot: killed on the way into, and inside, compensation
    Case("before:ship", fail=True, bound=True),
    Case("after:ship", fail=True, bound=True),
    Case("uncommitted:ship.failed", fail=True, bound=True),
    Case("committed:ship.failed", fail=True),
    Case("before:charge.undo", fail=True),
    Case("after:charge.undo", fail=True, duplicated="refund"),
    Case("uncommitted:charge.undo", fail=True, duplicated="refund"),
    Case("committed:charge.undo", fail=True),
    Case("before:reserve.undo", fail=True),
    Case("after:reserve.undo", fail=True),  # its release is idempotent
    Case("uncommitted:reserve.undo", fail=True),
    Case("committed:reserve.undo", fail=True, finished_before_recovery=True),
]


# -- helpers -------------------------------------------------------------------------------


def child(*args: str) -> subprocess.Popen[str]:
    """Start ``crash_child.py`` with this interpreter, able to import this checkout."""
    env = dict(os.environ)
    root = str(HERE.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )


def killed(process: subprocess.Popen[str]) -> None:
    """Wait for ``process`` and check that SIGKILL, not an error, ended it."""
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the child did not die by SIGKILL:\n{stderr}"


def wait_for_leases(engine: Engine) -> None:
    """Sleep until every lease the dead child held has expired."""
    rows = [engine.store.get(run.id) for run in engine.list(limit=1000)]
    expiries = [row.lease_expires_at for row in rows if row and row.lease_expires_at]
    if expiries:
        time.sleep(max(0.0, max(expiries) - time.time()) + 0.05)


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    """The database file and the external service's log of a test."""
    return str(tmp_path / "crash.db"), str(tmp_path / "ledger.jsonl")


@pytest.fixture
def recovering(files: tuple[str, str]) -> Iterator[Any]:
    """Open a fresh engine on the test's database (after the child made it)."""
    engines: list[Engine] = []

    def open_engine() -> Engine:
        engine = Engine(f"sqlite:///{files[0]}", sagas=[CrashCheckout], lease_ttl=LEASE_TTL)
        engines.append(engine)
        return engine

    yield open_engine
    for engine in engines:
        engine.close()


def check_instance(
    engine: Engine, run_id: str, files: tuple[str, str], status: Status, calls: dict[str, int]
) -> InstanceRow:
    """Check the end state of one instance; return its row (epoch: 1 + claims since start)."""
    database, ledger = files
    run = engine.get(run_id)
    assert run.status is status, run.error

    path = [(h.kind.value, h.transition, h.from_state, h.to_state) for h in run.history]
    expected = {
        Status.COMPLETED: COMPLETED_PATH,
        Status.COMPENSATED: COMPENSATED_PATH,
        Status.FAILED: BOUND_PATH,
    }
    assert path == expected[status]
    # one history row per persisted transition; between two, the version moves by one plus
    # one per claim, and every claim bumps the epoch: nothing persisted goes unrecorded
    first = run.history[0]
    assert (first.version, first.epoch) == (1, 1)
    for before, after in zip(run.history, run.history[1:], strict=False):
        assert after.version - before.version == 1 + (after.epoch - before.epoch), path
    row = engine.store.get(run_id)
    assert row is not None
    last = run.history[-1]
    assert row.version - last.version == row.epoch - last.epoch

    # the write made in the transition's own transaction happened exactly once
    effects = [(step, released) for who, step, released in read_effects(database) if who == run_id]
    assert effects == [("reserve", int(status is Status.COMPENSATED))]

    # the external service saw each call once, or again only with the same key
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for call in Ledger(ledger).calls():
        if call["instance"] == run_id:
            seen[call["action"]].append(call["key"])
    assert {action: len(seen[action]) for action in calls} == calls
    for action, keys in seen.items():
        assert len(set(keys)) <= 1, f"{action} was called with different idempotency keys"
    assert not set(seen["refund"]) & set(seen["charge"]), "a refund needs its own key"
    return row


# -- one instance, killed at each boundary ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_killed_at_a_boundary_recovers(case: Case, files: tuple[str, str], recovering: Any) -> None:
    database, ledger = files
    args = ["run", database, ledger, case.boundary, f"--lease-ttl={LEASE_TTL}"]
    args += ["--fail"] if case.fail else []
    killed(child(*args, *(["--idempotent"] if case.idempotent else [])))

    engine = recovering()
    (interrupted,) = engine.list()
    assert interrupted.status.is_terminal == case.finished_before_recovery
    wait_for_leases(engine)

    recovered = engine.recover()

    assert [run.id for run in recovered] == (
        [] if case.finished_before_recovery else [interrupted.id]
    )
    assert all(run.status is case.status for run in recovered)
    row = check_instance(engine, interrupted.id, files, case.status, case.calls())
    assert row.epoch == (1 if case.finished_before_recovery else 2), "claimed once by recovery"
    assert row.lease_owner is None, "a finished run must not keep its lease"
    assert engine.recover() == []


@pytest.mark.parametrize(
    "boundary", ["before:reserve", "after:reserve", "uncommitted:reserve", "uncommitted:start"]
)
def test_killed_before_the_start_commits_leaves_nothing(
    boundary: str, files: tuple[str, str], recovering: Any
) -> None:
    # the first step is transactional: the start commits in its transaction, or not at all
    database, ledger = files
    killed(child("run", database, ledger, boundary, f"--lease-ttl={LEASE_TTL}"))

    engine = recovering()
    assert engine.list() == []
    assert engine.recover() == []
    assert read_effects(database) == []
    assert Ledger(ledger).calls() == []


def test_killed_again_while_recovering_recovers(files: tuple[str, str], recovering: Any) -> None:
    database, ledger = files
    killed(child("run", database, ledger, "after:charge", f"--lease-ttl={LEASE_TTL}"))
    engine = recovering()
    wait_for_leases(engine)
    killed(child("recover", database, "--boundary=uncommitted:ship", f"--lease-ttl={LEASE_TTL}"))
    wait_for_leases(engine)

    (recovered,) = engine.recover()

    assert recovered.status is Status.COMPLETED
    calls = {"charge": 2, "refund": 0, "ship": 2, "notify": 1}
    row = check_instance(engine, recovered.id, files, Status.COMPLETED, calls)
    assert row.epoch == 3, "claimed by each of the two recoveries"
    assert row.lease_owner is None


# -- many instances, two recovering processes ---------------------------------------------


def test_two_processes_recovering_at_once_resume_each_instance_once(
    files: tuple[str, str], recovering: Any
) -> None:
    database, ledger = files
    count = 20
    # each run is left partway (see ABANDON_AT: one in six inside its compensation);
    # each step sleeps 20 ms so that the two recoverers overlap
    killed(child("abandon", database, ledger, str(count), "--step-delay=0.02"))
    engine = recovering()
    runs = {run.key: run for run in engine.list(limit=1000)}
    assert len(runs) == count
    assert not any(run.status.is_terminal for run in runs.values())
    wait_for_leases(engine)

    at = time.time() + 1.5  # both start recovering at the same instant, once imported
    # their own leases are long: a recoverer starved of CPU must not lose a run to the other
    recoverers = [child("recover", database, f"--at={at}", "--lease-ttl=10") for _ in range(2)]
    reports = []
    for process in recoverers:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout))
    first, second = ({run_id for run_id, _ in report["resumed"]} for report in reports)
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports), (
        "the two recoverers did not overlap; the test proves nothing"
    )

    assert first | second == {run.id for run in runs.values()}
    rows = {}
    for key, run in runs.items():
        boundary, failing = ABANDON_AT[int(key.rsplit("-", 1)[1]) % len(ABANDON_AT)]
        case = Case(boundary, failing, duplicated="charge" if boundary == "after:charge" else None)
        rows[run.id] = check_instance(engine, run.id, files, case.status, case.calls())
    # every run was claimed once, by one of the two, and let go when it finished
    assert not first & second
    assert all(row.epoch == 2 for row in rows.values())
    assert all(row.lease_owner is None for row in rows.values())


# -- the interleavings behind "each instance once", made deterministic --------------------------


@attrs.define
class Nothing:
    """Input and context of the minimal sagas."""


class Abandon(BaseException):
    """Escapes the engine like a crash: nothing more is persisted."""


class Quick(Saga[Nothing, Nothing]):
    """One step; the hook decides what it does."""

    name = "crash-quick"
    hook: Any = None

    new = State(initial=True)
    done = State(final=True)
    finish = new.to(done).run(lambda ctx: Quick.hook(ctx), read_only=True)


class Waits(Saga[Nothing, Nothing]):
    """Waits for a payment event."""

    name = "crash-waits"

    new = State(initial=True)
    waiting = State(timeout=3600)
    done = State(final=True)
    wait = new.to(waiting)
    pay = waiting.to(done).on("payment_received")
    give_up = waiting.to(done).on_timeout()


def test_recover_skips_runs_finished_since_it_listed_them(tmp_path: Path) -> None:
    """Engine B recovers two crashed runs; while B runs the first, engine A recovers too.
    Each run is resumed by exactly one of them, once, and ends released."""
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    now = [1000.0]
    a = Engine(url, sagas=[Quick], lease_ttl=10, clock=lambda: now[0])
    b = Engine(url, sagas=[Quick], lease_ttl=10, clock=lambda: now[0])
    held_by_b: list[str] = []
    resumed_by_a: list[str] = []

    def abandon(ctx: Any) -> None:
        raise Abandon

    def let_a_recover_meanwhile(ctx: Any) -> None:
        if not held_by_b:  # the first step B runs; A's own step comes through here too
            held_by_b.append(ctx.instance_id)
            resumed_by_a.extend(run.id for run in a.recover())

    try:
        Quick.hook = abandon
        for _ in range(2):
            with contextlib.suppress(Abandon):
                a.start(Quick, Nothing())
        crashed = {run.id for run in a.list()}
        now[0] += 60  # both leases have expired
        Quick.hook = let_a_recover_meanwhile

        resumed_by_b = [run.id for run in b.recover()]

        # B claims its batch (both runs) before driving any: A finds nothing left to take
        assert held_by_b[0] in resumed_by_b
        assert not set(resumed_by_a) & set(resumed_by_b)
        assert set(resumed_by_a) | set(resumed_by_b) == crashed
        for run_id in crashed:
            row = b.store.get(run_id)
            assert row is not None
            assert (row.status, row.epoch, row.lease_owner) == ("completed", 2, None)
    finally:
        Quick.hook = None
        a.close()
        b.close()


def test_resuming_a_waiting_run_leaves_it_free_for_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'waits.db'}"
    with Engine(url, sagas=[Waits]) as shop, Engine(url, sagas=[Waits]) as worker:
        run = shop.start(Waits, Nothing())
        assert run.status is Status.WAITING

        assert worker.resume(run.id).status is Status.WAITING

        assert shop.send("payment_received", instance_id=run.id).run.status is Status.COMPLETED


def test_the_minimal_sagas_work_without_crashes(tmp_path: Path) -> None:
    Quick.hook = lambda ctx: None
    try:
        with Engine(f"sqlite:///{tmp_path / 'ok.db'}", sagas=[Quick, Waits]) as engine:
            assert engine.start(Quick, Nothing()).status is Status.COMPLETED
            waiting = engine.start(Waits, Nothing())
            done: Run = engine.send("payment_received", instance_id=waiting.id).run
            assert done.status is Status.COMPLETED
    finally:
        Quick.hook = None
