"""Fault tests against a real PostgreSQL: races, fencing, killed connections, killed workers.

Each test prints its figures (run ``pytest -s`` to see them):

- **same-key storm**: for each of 20 keys, 50 starts at the same instant from
  4 processes (``fault_storm.py``, 12 or 13 threads each): exactly one run per
  key, every other start a typed ``EntityBusy``, nothing else;
- **fencing**: engine A's step pauses past its lease, engine B claims the run
  (by ``recover`` or ``resume``) and finishes it, then A wakes and writes: A's
  write is rejected with ``FencedOut`` and nothing of A's reaches the
  database (no history row in A's epoch after B's claim, no effect row from
  A's transactional step), over 240 trials;
- **a backend killed mid-transition**: ``pg_terminate_backend`` on the
  connection a transition is being written on, just before its COMMIT (the
  engine's own connection, for a step or for a start, where the transition is
  one autocommitted statement: just before that statement; or a
  transactional step's), or after a transactional step's write and before the
  transition's UPDATE: nothing of that transition is persisted, the engine
  raises ``StoreError`` naming the lost connection and keeps working on the
  same thread, and a fresh engine's ``recover`` finishes the run;
- **kill -9 of one of 4 workers** (``statesaga worker`` processes) while they
  drain 500 due runs, preferably while it holds an open transaction: the
  other three drain the rest; past the dead worker's lease (the recovering
  engine's clock is set beyond it, the worker command's lease being 30 s),
  ``recover`` finishes what it held; all 500 end ``completed`` and the write
  each run makes in its transition's own transaction exists exactly once.

They use the session's PostgreSQL schema (``postgres_url``): they skip when
PostgreSQL is unreachable, and fail instead under ``STATESAGA_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fault_sagas import (
    EFFECTS_DDL,
    Drain,
    Fence,
    FenceTransactional,
    Job,
    Ledgered,
    effect_rows,
)

from statesaga import Engine, FencedOut, Status
from statesaga.run import Run
from statesaga.store.hooks import StoreWrite, WriteMoment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TABLES = "statesaga_history, statesaga_locks, statesaga_instances, fault_effects"


# -- helpers ---------------------------------------------------------------------------------


def _reset(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(EFFECTS_DDL)
        connection.exec_driver_sql(f"TRUNCATE {TABLES} CASCADE")
    engine.dispose()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    """The session's PostgreSQL store, emptied before and after, with ``fault_effects``."""
    _reset(postgres_url)
    yield postgres_url
    _reset(postgres_url)


@pytest.fixture
def admin(pg: str) -> Iterator[sa.Engine]:
    """A connection pool of the test's own, outside any engine (autocommit)."""
    engine = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def child_env() -> dict[str, str]:
    """The environment of a child process: it imports this checkout and ``tests/store/``."""
    env = dict(os.environ)
    paths = [str(HERE), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def stop(process: subprocess.Popen[Any]) -> None:
    """Make sure a child started by a test is gone (SIGKILL if it still runs)."""
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def history_of(connection: sa.Connection, instance_id: str) -> list[tuple[Any, ...]]:
    """``(kind, transition, version, epoch)`` of each history row of an instance, in order."""
    rows = connection.exec_driver_sql(
        "SELECT kind, transition, version, epoch FROM statesaga_history "
        "WHERE instance_id = %s ORDER BY id",
        (instance_id,),
    )
    return [tuple(row) for row in rows]


def report(title: str, **figures: Any) -> None:
    """Print a test's figures on one line (``pytest -s`` shows them)."""
    print(f"\n[{title}] " + ", ".join(f"{name}={value}" for name, value in figures.items()))


# -- same-key storm ----------------------------------------------------------------------------

STORM_KEYS = 20
STORM_STARTS = 50
STORM_THREADS = (13, 13, 12, 12)  # 50 starts per key from 4 processes


@pytest.mark.slow
def test_a_storm_of_starts_on_one_key_starts_one_run_and_reports_the_rest_busy(pg: str) -> None:
    assert sum(STORM_THREADS) == STORM_STARTS
    prefix = f"storm-{os.getpid()}"
    spacing = 0.2
    at = time.time() + 4.0  # every process imported and connected by then
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fault_storm.py"),
                pg,
                prefix,
                str(STORM_KEYS),
                str(threads),
                str(at),
                f"--spacing={spacing}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=ROOT,
        )
        for threads in STORM_THREADS
    ]
    attempts: list[tuple[str, str, float, float]] = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=90)
            assert process.returncode == 0, stderr
            attempts.extend((k, o, s, f) for k, o, s, f in json.loads(stdout))
    finally:
        for process in processes:
            stop(process)

    by_key: dict[str, list[tuple[str, float, float]]] = collections.defaultdict(list)
    for key, outcome, started, finished in attempts:
        by_key[key].append((outcome, started, finished))
    errors = [outcome for _, outcome, _, _ in attempts if outcome.startswith("error:")]
    assert errors == [], "every start must end in a run or EntityBusy"
    assert len(by_key) == STORM_KEYS
    winners: dict[str, str] = {}
    raced = []
    for key, outcomes in by_key.items():
        assert len(outcomes) == STORM_STARTS, key
        runs = [o for o, _, _ in outcomes if o.startswith("run:")]
        assert len(runs) == 1, f"{key}: {len(runs)} runs started"
        assert sum(o == "busy" for o, _, _ in outcomes) == STORM_STARTS - 1
        winners[key] = runs[0].removeprefix("run:")
        # how many starts were already under way before the winner's start returned
        won_at = next(f for o, _, f in outcomes if o.startswith("run:"))
        raced.append(sum(s < won_at for o, s, _ in outcomes if o == "busy"))
    assert min(raced) >= 1, "some key saw no concurrent start; the storm proves nothing there"

    engine = sa.create_engine(pg)
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT entity_key, id, status FROM statesaga_instances WHERE saga = 'fault-storm'"
        ).all()
    engine.dispose()
    assert sorted((key, run_id) for key, run_id, _ in stored) == sorted(winners.items())
    assert {status for _, _, status in stored} == {"waiting"}
    late = max(s - (at + int(k.rsplit("-", 1)[1]) * spacing) for k, _, s, _ in attempts)
    report(
        "storm",
        keys=STORM_KEYS,
        starts_per_key=STORM_STARTS,
        processes=len(STORM_THREADS),
        runs=len(winners),
        busy=sum(o == "busy" for _, o, _, _ in attempts),
        other_errors=len(errors),
        raced_min=min(raced),
        raced_median=sorted(raced)[len(raced) // 2],
        latest_start_after_its_slot_ms=round(late * 1000, 1),
    )


# -- fencing -------------------------------------------------------------------------------------

FENCE_TRIALS = 240
LEASE = 10.0  # seconds on the shared fake clock; the step's timeout is 5


class _Holder:
    """Engine A, on a thread of its own (``engine-a``), starting runs when told to."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.jobs: queue.Queue[type | None] = queue.Queue()
        self.results: queue.Queue[Run | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="engine-a", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (saga := self.jobs.get()) is not None:
            try:
                # an idempotency key: the start commits before the step, so that there is a
                # run whose lease A can lose while paused (without one, a run whose first step
                # is transactional is only written when that step commits)
                key = uuid.uuid4().hex
                self.results.put(self.engine.start(saga, Job(), idempotency_key=key))
            except BaseException as error:
                self.results.put(error)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(10)


def test_a_paused_holder_that_lost_its_lease_is_fenced_out(pg: str) -> None:
    now = [time.time()]

    def clock() -> float:
        return now[0]

    sagas = [Fence, FenceTransactional]
    a = Engine(pg, sagas=sagas, lease_ttl=LEASE, clock=clock, owner="engine-a")
    b = Engine(pg, sagas=sagas, lease_ttl=LEASE, clock=clock, owner="engine-b")
    holder = _Holder(a)
    inside = threading.Event()
    release = threading.Event()
    paused: list[str] = []

    def pause_a(ctx: Any) -> None:
        if not threading.current_thread().name.startswith("engine-a"):
            return  # engine B's attempt goes straight through (a timed step: in its own thread)
        paused.append(ctx.instance_id)
        inside.set()
        if not release.wait(10):
            raise RuntimeError("the test never released engine A")

    outcomes: collections.Counter[str] = collections.Counter()
    stale_history = stale_effects = 0
    check = sa.create_engine(pg)
    started = time.perf_counter()
    Fence.hook = pause_a
    try:
        for trial in range(FENCE_TRIALS):
            saga = FenceTransactional if trial % 2 else Fence
            inside.clear()
            release.clear()
            holder.jobs.put(saga)
            assert inside.wait(10), f"trial {trial}: engine A never reached its step"
            instance_id = paused[-1]

            now[0] += LEASE + 1  # A stays paused past its lease (and its step's timeout)
            if trial % 4 < 2:
                (taken,) = b.recover()
                assert taken.id == instance_id
            else:
                taken = b.resume(instance_id)
            assert taken.status is Status.COMPLETED

            release.set()  # A wakes and writes
            result = holder.results.get(timeout=10)
            outcomes[type(result).__name__] += 1

            with check.connect() as connection:
                rows = history_of(connection, instance_id)
                effects = [e for e in effect_rows(connection) if e[0] == instance_id]
                row = connection.exec_driver_sql(
                    "SELECT status, version, epoch, lease_owner FROM statesaga_instances "
                    "WHERE id = %s",
                    (instance_id,),
                ).one()
            stale_history += sum(epoch == 1 and kind != "start" for kind, _, _, epoch in rows)
            # the writer is "<pid>:<thread>"; a timed step's thread is named "engine-a/..."
            by_a = [w for _, _, w in effects if w.split(":", 1)[1].startswith("engine-a")]
            stale_effects += len(by_a)
            assert isinstance(result, FencedOut), f"trial {trial}: A's late write got {result!r}"
            assert [(k, t, e) for k, t, _, e in rows] == [
                ("start", None, 1),
                ("forward", "hold", 2),
            ], f"trial {trial}"
            assert tuple(row) == ("completed", rows[-1][2], 2, None), f"trial {trial}"
            expected = [(instance_id, "hold")] if saga is FenceTransactional else []
            assert [(i, s) for i, s, _ in effects] == expected, f"trial {trial}"
    finally:
        Fence.hook = None
        release.set()
        holder.close()
        a.close()
        b.close()
        check.dispose()
    elapsed = time.perf_counter() - started
    assert outcomes == {"FencedOut": FENCE_TRIALS}
    assert stale_history == stale_effects == 0
    report(
        "fencing",
        trials=FENCE_TRIALS,
        fenced_out=outcomes["FencedOut"],
        stale_history_rows=stale_history,
        stale_effect_rows=stale_effects,
        seconds=round(elapsed, 2),
    )


# -- a backend killed mid-transition ----------------------------------------------------------


def _terminate(admin: sa.Engine, pid: int) -> None:
    """Terminate a backend and wait (5 s at most) until it is gone."""
    with admin.connect() as connection:
        done = connection.exec_driver_sql("SELECT pg_terminate_backend(%s, 5000)", (pid,)).scalar()
    assert done, f"backend {pid} did not terminate"


def _kill_at(engine: Engine, admin: sa.Engine, record: str, before: str) -> list[int]:
    """Arm ``engine``'s store: terminate the backend ``before`` ``record``'s "commit" or "update".

    ``record`` names a history row: ``start`` or a transition. Through the
    store's hook: with "commit", the backend of the connection the write commits
    on (the engine's own, or a transactional step's) dies just before its
    ``COMMIT``, or before the one statement that is the whole transaction. With
    "update", the backend of a transactional step's transaction dies after the
    step's own write and before the transition's UPDATE. Returns the list the
    terminated backend's pid is appended to.
    """
    killed: list[int] = []
    moment = WriteMoment.BEFORE_WRITE if before == "update" else WriteMoment.BEFORE_COMMIT

    def kill(at: WriteMoment, write: StoreWrite) -> None:
        if at is not moment or killed:
            return
        if not any((row.transition or row.kind) == record for row in write.history):
            return
        if before == "update":
            assert write.joined, "only a step's transaction is killed before UPDATE"
        killed.append(write.connection.info.backend_pid)
        _terminate(admin, killed[-1])

    store: Any = engine.store
    store.hook = kill
    return killed


# where the backend dies: (the record whose transaction it kills, before its "commit" or its
# "update"). Whichever connection it was (the engine's own, or a transactional step's), the
# transaction rolled back and is tried once more on a fresh connection: the run goes on, and
# nothing is written twice.
KILLS = {
    "engine-connection-before-commit": ("charge", "commit"),
    "step-connection-before-commit": ("reserve", "commit"),
    "step-connection-before-update": ("reserve", "update"),
    "start-before-commit": ("start", "commit"),
}


def test_every_backend_terminated_while_idle_costs_one_retried_transition(
    pg: str, admin: sa.Engine
) -> None:
    # a PostgreSQL restart: every connection the engine holds is dead, the idle ones too
    from statesaga.store import SqlStore

    store = SqlStore(pg, hot_connections=3)
    with Engine(store, sagas=[Ledgered]) as engine:
        gate = threading.Barrier(3)

        def warm() -> None:
            gate.wait()
            engine.start(Ledgered, Job())

        threads = [threading.Thread(target=warm) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pids = [hot.raw.info.backend_pid for hot in store._hot._idle]
        assert len(pids) >= 2
        for pid in pids:
            _terminate(admin, pid)

        run = engine.start(Ledgered, Job())

        assert run.status is Status.COMPLETED
    report("terminated:every-idle-backend", backends=len(pids), retried=True)


@pytest.mark.parametrize("where", list(KILLS))
def test_a_backend_killed_mid_transition_costs_one_retried_transition(
    pg: str, admin: sa.Engine, where: str
) -> None:
    record, before = KILLS[where]
    victim = Engine(pg, sagas=[Ledgered], lease_ttl=1.0)
    killed = _kill_at(victim, admin, record, before)
    try:
        run = victim.start(Ledgered, Job())
        assert len(killed) == 1
        assert run.status is Status.COMPLETED
        path = [h.transition or h.kind.value for h in victim.get(run.id).history]
        assert path == ["start", "reserve", "charge", "ship"]
    finally:
        victim.close()
    with admin.connect() as connection:
        effects = effect_rows(connection)
        statuses = connection.exec_driver_sql(
            "SELECT status, count(*) FROM statesaga_instances GROUP BY status"
        ).all()
    assert [step for _, step, _ in effects] == ["reserve"], "a transactional write twice"
    assert dict(statuses) == {"completed": 1}
    report(f"terminated:{where}", backend=killed[0], retried=True, effect_rows=len(effects))


# -- kill -9 of one of 4 workers ---------------------------------------------------------------

DRAIN_RUNS = 500
WORKERS = 4


def _counts(connection: sa.Connection) -> dict[str, int]:
    rows = connection.exec_driver_sql(
        "SELECT status, count(*) FROM statesaga_instances GROUP BY status"
    )
    return dict(rows.all())


def _pid(owner: str) -> int:
    """The process id in an engine's default owner name (``host:pid:random``)."""
    return int(owner.rsplit(":", 2)[1])


def _in_transaction(connection: sa.Connection) -> list[int]:
    """The workers (by number) with a connection inside an open transaction right now."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT application_name FROM pg_stat_activity "
        "WHERE application_name LIKE %s AND state = 'idle in transaction'",
        ("fault-worker-%",),
    )
    return [int(name.rsplit("-", 1)[1]) for (name,) in rows]


def _held(connection: sa.Connection) -> dict[str, int]:
    """Open runs per lease owner."""
    rows = connection.exec_driver_sql(
        "SELECT lease_owner, count(*) FROM statesaga_instances "
        "WHERE status NOT IN ('completed', 'compensated') AND lease_owner IS NOT NULL "
        "GROUP BY lease_owner"
    )
    return dict(rows.all())


@pytest.mark.slow
def test_one_of_four_workers_killed_while_draining_500_runs(
    pg: str, admin: sa.Engine, tmp_path: Path
) -> None:
    with Engine(pg, sagas=[Drain]) as setup:
        ids = {setup.start(Drain, Job(pause=0.01)).id for _ in range(DRAIN_RUNS)}
    with admin.connect() as connection:
        assert _counts(connection) == {"waiting": DRAIN_RUNS}

    def command(n: int) -> list[str]:
        # each worker's connections are named, to see which of them is inside a transaction
        url = f"{pg}{'&' if '?' in pg else '?'}application_name=fault-worker-{n}"
        return [
            *(sys.executable, "-m", "statesaga.cli", "worker", "--saga", "fault_sagas:Drain"),
            *("--db", url, "--concurrency", "2", "--poll", "0.05", "--log-every", "1"),
        ]

    logs = [tmp_path / f"worker-{n}.log" for n in range(WORKERS)]
    workers: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for n, log in enumerate(logs):
            with log.open("wb") as out:
                workers.append(
                    subprocess.Popen(
                        command(n), stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
                    )
                )
        pids = [w.pid for w in workers]
        # once a fifth of the runs are done, kill -9 a worker that holds runs, preferably
        # while one of its transactions is open (a transactional step's write not yet committed)
        deadline = time.monotonic() + 60
        with admin.connect() as connection:
            while True:
                assert time.monotonic() < deadline, "the workers made no progress"
                for worker, log in zip(workers, logs, strict=True):
                    assert worker.poll() is None, log.read_text()
                done = _counts(connection).get("completed", 0)
                held = {_pid(owner): count for owner, count in _held(connection).items()}
                held = {pid: count for pid, count in held.items() if pid in pids}
                open_tx = {pids[n] for n in _in_transaction(connection)}
                candidates = [pid for pid in held if pid in open_tx] or (
                    list(held) if done >= 2 * DRAIN_RUNS // 5 else []
                )
                if done >= DRAIN_RUNS // 5 and candidates:
                    victim_pid = max(candidates, key=lambda pid: held[pid])
                    break
                time.sleep(0.005)
            victim = next(w for w in workers if w.pid == victim_pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            killed_in_transaction = victim_pid in open_tx
            killed_after = time.monotonic() - started
            done_at_kill = _counts(connection).get("completed", 0)
            orphans = {
                owner: count
                for owner, count in _held(connection).items()
                if _pid(owner) == victim_pid
            }
            assert len(orphans) == 1, orphans
            ((victim_owner, orphaned),) = orphans.items()

            # the other three drain everything but the dead worker's runs (leased 30 s)
            survivors = [w for w in workers if w is not victim]
            while True:
                assert time.monotonic() < deadline, "the surviving workers did not drain"
                counts = _counts(connection)
                if counts.get("completed", 0) == DRAIN_RUNS - orphaned:
                    break
                time.sleep(0.02)
            assert _held(connection) == {victim_owner: orphaned}
            expiry = connection.exec_driver_sql(
                "SELECT max(lease_expires_at) FROM statesaga_instances WHERE lease_owner = %s",
                (victim_owner,),
            ).scalar()
        for worker in survivors:
            worker.send_signal(signal.SIGTERM)
        for worker in survivors:
            assert worker.wait(timeout=20) == 0
    finally:
        for worker in workers:
            stop(worker)
    outputs = [log.read_text() for log in logs]
    stopped = [line for out in outputs for line in out.splitlines() if "stopped:" in line]
    assert len(stopped) == WORKERS - 1, outputs
    assert all(" 0 errors" in line for line in stopped), stopped

    # recovery after the dead worker's lease: its clock runs past that lease's expiry
    offset = expiry - time.time() + 0.1
    with Engine(pg, sagas=[Drain], clock=lambda: time.time() + offset) as recoverer:
        recovered = recoverer.recover()
    assert len(recovered) == orphaned
    assert {run.status for run in recovered} == {Status.COMPLETED}

    with admin.connect() as connection:
        assert _counts(connection) == {"completed": DRAIN_RUNS}
        effects = effect_rows(connection)
        epochs = collections.Counter(
            epoch
            for (epoch,) in connection.exec_driver_sql("SELECT epoch FROM statesaga_instances")
        )
        leased = connection.exec_driver_sql(
            "SELECT count(*) FROM statesaga_instances WHERE lease_owner IS NOT NULL"
        ).scalar()
    per_run = collections.Counter(instance_id for instance_id, _, _ in effects)
    assert set(per_run) == ids
    assert set(per_run.values()) == {1}, "a same-transaction write happened twice"
    assert leased == 0
    victim_effects = sum(writer.startswith(f"{victim_pid}:") for _, _, writer in effects)
    recoverer_effects = sum(writer.startswith(f"{os.getpid()}:") for _, _, writer in effects)
    recovered_ids = {run.id for run in recovered}
    assert epochs == {2: DRAIN_RUNS - orphaned, 3: orphaned}, epochs
    report(
        "kill -9",
        runs=DRAIN_RUNS,
        workers=WORKERS,
        completed_at_kill=done_at_kill,
        killed_after_s=round(killed_after, 2),
        orphaned=orphaned,
        recovered=len(recovered_ids),
        effect_rows=len(effects),
        killed_in_transaction=killed_in_transaction,
        effects_by_killed_worker=victim_effects,
        reserves_redone_by_recovery=recoverer_effects,
        total_s=round(time.monotonic() - started, 2),
    )
