"""A second process writing the SQLite file of tests/store/test_sqlite_writers.py.

Usage (the tests run it with ``sys.executable``)::

    python writers_child.py hold DB SECONDS      # hold a write transaction, say "held"
    python writers_child.py checkouts DB N TAG   # complete N checkouts, say "done N"
    python writers_child.py hog DB SECONDS       # write back to back, say "hogging", "wrote N"
"""

from __future__ import annotations

import sys
import time

from writers_sagas import Basket, Checkout, stock, store_at

from statesaga import Engine, Status


def hold(path: str, seconds: float) -> None:
    store = store_at(path)
    with store.transaction() as connection:
        connection.execute(stock.insert().values(run_id="held-by-child", step="held"))
        print("held", flush=True)
        time.sleep(seconds)
        connection.execute(stock.delete().where(stock.c.run_id == "held-by-child"))
    store.close()


def hog(path: str, seconds: float) -> None:
    """Write transactions back to back, each holding the write lock a moment, for ``seconds``."""
    store = store_at(path)
    wrote = 0
    print("hogging", flush=True)
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with store.transaction() as connection:
            connection.execute(stock.insert().values(run_id="hog", step="hog"))
            time.sleep(0.005)
            connection.execute(stock.delete().where(stock.c.run_id == "hog"))
        wrote += 1
    store.close()
    print(f"wrote {wrote}", flush=True)


def checkouts(path: str, count: int, tag: str) -> None:
    with Engine(store_at(path), sagas=[Checkout]) as engine:
        for n in range(count):
            run = engine.start(Checkout, Basket(f"{tag}-{n}"))
            assert run.status is Status.COMPLETED, run
    print(f"done {count}", flush=True)


if __name__ == "__main__":
    mode, database, *rest = sys.argv[1:]
    if mode == "hold":
        hold(database, float(rest[0]))
    elif mode == "hog":
        hog(database, float(rest[0]))
    else:
        checkouts(database, int(rest[0]), rest[1])
