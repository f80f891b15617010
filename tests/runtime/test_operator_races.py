"""Operators at once: many resolves or forks of one failed run, from several engines.

Contention is normal: two operators (or a retried click) resolving the same run,
or forking it twice, must leave exactly one resolution, or exactly one open fork
on the run's entity key; the others get a clear refusal, never a second record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sagas import Linear, Pivoted, Waiting, journal
from test_operator import failed_run

from statesaga import (
    ConcurrencyError,
    Engine,
    ForkNotAllowed,
    HistoryKind,
    ResolveNotAllowed,
    Status,
)

RACERS = 8


def race(
    engines: list[Engine], act: Callable[[Engine], Any]
) -> tuple[list[Any], list[BaseException]]:
    """``act`` on every engine at once (two threads per engine); its results and errors."""
    gate = threading.Barrier(2 * len(engines))
    results: list[Any] = []
    errors: list[BaseException] = []

    def go(engine: Engine) -> None:
        gate.wait()
        try:
            results.append(act(engine))
        except BaseException as error:  # collected: the test says which are allowed
            errors.append(error)

    threads = [threading.Thread(target=go, args=(e,)) for e in engines for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, errors


def test_many_operators_resolving_one_run_leave_one_resolution(db: str) -> None:
    engines = [Engine(db, sagas=[Linear, Pivoted, Waiting]) for _ in range(RACERS // 2)]
    try:
        run_id = failed_run(engines[0])
        results, errors = race(
            engines,
            lambda e: e.resolve(run_id, outcome="compensated", note="fixed by hand", by="ops"),
        )
        assert len(results) >= 1
        assert all(r.status is Status.COMPENSATED for r in results)
        # the others were refused: it was no longer failed, or another held it
        assert all(isinstance(e, ResolveNotAllowed | ConcurrencyError) for e in errors), errors
        history = engines[0].get(run_id).history
        assert [h.kind for h in history].count(HistoryKind.RESOLVED) == 1
        assert engines[0].get(run_id).status is Status.COMPENSATED
    finally:
        for engine in engines:
            engine.close()


def test_many_forks_of_one_keyed_run_leave_one_open_run_on_its_key(db: str) -> None:
    engines = [Engine(db, sagas=[Linear, Pivoted, Waiting]) for _ in range(RACERS // 2)]
    try:
        run_id = failed_run(engines[0], key="order:race")
        engines[0].resolve(run_id, outcome="compensated", note="undone by hand", by="ops")
        journal.hooks["reserve"] = lambda ctx: threading.Event().wait(0.05)  # forks overlap
        journal.fail.update({"ship": -1})  # each fork fails again at ship, then compensates

        results, errors = race(engines, lambda e: e.fork(run_id, from_step="reserve"))
        assert len(results) >= 1
        assert all(isinstance(e, ConcurrencyError | ForkNotAllowed) for e in errors), errors
        # never two open runs on the key at once, and every fork that ran finished
        assert all(not r.status.is_open for r in results)
        on_key = engines[0].list(key="order:race", limit=100)
        assert [r for r in on_key if r.status.is_open] == []
        forked_to = [h for h in engines[0].get(run_id).history if h.kind is HistoryKind.FORKED_TO]
        assert len(forked_to) == len(results)
    finally:
        journal.hooks.clear()
        for engine in engines:
            engine.close()
