"""Runs claimed in a batch keep their leases while they wait their turn.

``recover`` (and each worker thread) claims due runs in batches and drives
them one after another. A run further down the batch may wait longer than the
lease ttl while the runs before it take their time; its lease is renewed
meanwhile, like a running step's, so another engine recovering at the same
moment never takes it over and never runs its step a second time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import attrs

from statesaga import Engine, Retry, Saga, State, Status, StepContext
from statesaga.store import SqlStore
from statesaga.worker import Worker


@attrs.frozen
class Job:
    job_id: str


@attrs.frozen
class Done:
    ok: bool = False


calls: Counter[str] = Counter()
calls_lock = threading.Lock()
SLOW = 1.5  # each run's step, once due: longer than the engines' lease ttl


def slow_once_due(ctx: StepContext[Job, Done]) -> Done:
    """Fails its first try (the run is put off, due later); then takes SLOW seconds."""
    with calls_lock:
        calls[ctx.instance_id] += 1
    if ctx.attempt == 1:
        raise ConnectionError("the provider is down")
    time.sleep(SLOW)
    return Done(ok=True)


class Slow(Saga[Job, Done]):
    name = "slow-after-an-outage"
    new = State(initial=True)
    done = State(final=True)

    work = new.to(done).run(
        slow_once_due, read_only=True, retry=Retry(attempts=3, initial_interval=0.2, jitter=0)
    )


def engine_on(path: Path, ttl: float) -> Engine:
    return Engine(SqlStore(f"sqlite:///{path}"), sagas=[Slow], lease_ttl=ttl, max_inline_sleep=0.0)


def due_runs(engine: Engine, count: int) -> list[str]:
    """Runs whose first try failed and whose retry is now due (as after an outage)."""
    ids = []
    for n in range(count):
        run = engine.start(Slow, Job(f"job-{n}"))
        assert run.status is Status.RUNNING  # put off: a worker takes the retry
        ids.append(run.id)
    time.sleep(0.3)  # past the retry delay
    return ids


def test_a_run_waiting_in_a_claimed_batch_is_never_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    ttl = 0.6
    first = engine_on(path, ttl)
    other = engine_on(path, ttl)
    ids = due_runs(first, 3)
    recovered: list[str] = []
    finished = threading.Event()

    def recover_all() -> None:
        recovered.extend(run.id for run in first.recover())  # one batch: all three claimed
        finished.set()

    thread = threading.Thread(target=recover_all)
    thread.start()
    taken_over: list[str] = []
    while not finished.wait(0.05):  # another engine recovering meanwhile, again and again
        taken_over.extend(run.id for run in other.recover())
    thread.join()
    assert taken_over == []
    assert sorted(recovered) == sorted(ids)
    assert {first.get(run_id).status for run_id in ids} == {Status.COMPLETED}
    assert [calls[run_id] for run_id in ids] == [2, 2, 2]  # the failed try, then one more
    first.close()
    other.close()


def test_workers_sharing_a_backlog_run_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    ttl = 0.6
    engines = [engine_on(path, ttl) for _ in range(3)]
    ids = due_runs(engines[0], 6)
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=Worker(engine, concurrency=1, batch=3, poll_interval=0.05).run, args=(stop,)
        )
        for engine in engines
    ]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(engines[0].get(run_id).status is Status.COMPLETED for run_id in ids):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert {engines[0].get(run_id).status for run_id in ids} == {Status.COMPLETED}
    assert [calls[run_id] for run_id in ids] == [2] * len(ids)
    for engine in engines:
        engine.close()
