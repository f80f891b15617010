"""The store's write hook: the seam crash and fault tests act through.

Each start and transition calls the hook before anything is written, just before
its commit and once it committed; a transactional step's transition commits
with its transaction, as the block exits. What the hook raises, the write raises,
and nothing of it is committed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sagas
from sagas import Order, journal

from statesaga import ConnectionLost, Engine, Status
from statesaga.store import SqlStore
from statesaga.store.hooks import StoreWrite, WriteMoment


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()


@pytest.fixture
def seen() -> list[tuple[str, str, bool, bool]]:
    return []


@pytest.fixture
def engine(db: str, seen: list[tuple[str, str, bool, bool]]) -> Iterator[Engine]:
    def hook(moment: WriteMoment, write: StoreWrite) -> None:
        names = ",".join(row.transition or row.kind for row in write.history)
        seen.append((moment.value, names, write.joined, write.connection is not None))

    store = SqlStore(db, hot_connections=2, pool_size=2, max_overflow=0, hook=hook)
    sagas.effects.metadata.create_all(store.engine)
    with Engine(store) as opened:
        yield opened


def test_every_write_calls_the_hook_before_before_commit_and_after(
    engine: Engine, seen: list[tuple[str, str, bool, bool]]
) -> None:
    run = engine.start(sagas.Transactional, Order("h-1"))

    assert run.status is Status.COMPLETED
    assert seen == [
        # the first step is transactional: the start is written in its transaction, with
        # its transition...
        ("before_write", "start,reserve", True, True),
        # ...and commits with it, as its block exits
        ("before_commit", "start,reserve", True, True),
        ("committed", "start,reserve", True, False),
        ("before_write", "charge", False, False),
        ("before_commit", "charge", False, True),
        ("committed", "charge", False, False),
    ]


def test_a_start_with_an_idempotency_key_is_written_before_its_first_step(
    engine: Engine, seen: list[tuple[str, str, bool, bool]]
) -> None:
    run = engine.start(sagas.Transactional, Order("h-3"), idempotency_key="order-h-3")

    assert run.status is Status.COMPLETED
    assert seen[:6] == [
        ("before_write", "start", False, False),
        ("before_commit", "start", False, True),
        ("committed", "start", False, False),
        # the transactional step's transition is written in its transaction...
        ("before_write", "reserve", True, True),
        # ...and commits with it, as its block exits
        ("before_commit", "reserve", True, True),
        ("committed", "reserve", True, False),
    ]


@pytest.mark.parametrize("moment", [WriteMoment.BEFORE_WRITE, WriteMoment.BEFORE_COMMIT])
def test_what_the_hook_raises_before_the_commit_leaves_nothing_written(
    tmp_path: os.PathLike[str], moment: WriteMoment
) -> None:
    def lose_the_connection(at: WriteMoment, write: StoreWrite) -> None:
        if at is moment and any(row.transition == "charge" for row in write.history):
            raise ConnectionLost("the database connection died (injected)")

    store = SqlStore(f"sqlite:///{os.path.join(tmp_path, 'hooked.db')}")
    with Engine(store, sagas=[sagas.Linear]) as engine:
        store.hook = lose_the_connection
        with pytest.raises(ConnectionLost, match="injected"):
            engine.start(sagas.Linear, Order("h-2"))
        store.hook = None
        (run,) = engine.list()
        assert run.state == "reserved"  # charge ran, its transition never committed
        assert [h.transition for h in engine.get(run.id).history] == [None, "reserve"]
