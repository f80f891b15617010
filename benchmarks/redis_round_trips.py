"""Redis round trips per saga for entity locking, counted at the client.

    python benchmarks/redis_round_trips.py [--url redis://127.0.0.1:6379/0] [--sagas 200]

Runs 5-step no-op sagas with ``RedisLocks`` on a temporary SQLite file and
counts every command the Redis client sends. The target: at most 2 per saga
(``SET NX PX`` to take the lease, one script call to release it) when no step
outlives the lease, so no renewal is needed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from five_steps import FiveSteps, Nothing

from statesaga import Engine
from statesaga.locks import RedisLocks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sagas", type=int, default=200)
    args = parser.parse_args()
    namespace = f"statesaga-bench:{uuid.uuid4().hex}:"
    locks = RedisLocks(args.url, namespace=namespace)
    sent: list[str] = []
    original = locks.client.execute_command

    def counted(*command: Any, **options: Any) -> Any:
        sent.append(str(command[0]))
        return original(*command, **options)

    locks.client.execute_command = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        with Engine(url, locks=locks, sagas=[FiveSteps]) as engine:
            engine.start(FiveSteps, Nothing(), key="warm-up")  # loads the scripts once
            sent.clear()
            for n in range(args.sagas):
                engine.start(FiveSteps, Nothing(), key=f"order:{n}")
    locks.close()
    per_saga = len(sent) / args.sagas
    kinds = sorted(set(sent))
    print(
        f"{args.sagas} sagas: {len(sent)} Redis commands ({', '.join(kinds)}), "
        f"{per_saga:.2f} per saga; target <= 2: {'met' if per_saga <= 2 else 'missed'}"
    )
    return 0 if per_saga <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
