"""A child process of the same-key storm: many threads start ``Storm`` runs on shared keys.

Usage (the tests run it with ``sys.executable``)::

    fault_storm.py URL PREFIX KEYS THREADS AT [--spacing S]

Each of ``THREADS`` threads starts one run on key ``PREFIX-0``, then one on
``PREFIX-1``, and so on up to ``KEYS``. Key ``i`` is started by every thread
of every storm process at the wall-clock instant ``AT + i * S``, so the
starts on one key from all processes race each other. The process prints,
as JSON, one ``[key, outcome, started, finished]`` per attempt: the outcome
is ``run:<id>`` (a run was started), ``busy`` (``EntityBusy``) or
``error:<type>:<message>`` (anything else, which the test rejects).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_sagas import Nothing, Storm

from statesaga import Engine, EntityBusy


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("keys", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("at", type=float)
    parser.add_argument("--spacing", type=float, default=0.2)
    args = parser.parse_args(argv)

    engine = Engine(args.url, sagas=[Storm])
    results: list[list[object]] = []
    lock = threading.Lock()

    def storm() -> None:
        for number in range(args.keys):
            key = f"{args.prefix}-{number}"
            time.sleep(max(0.0, args.at + number * args.spacing - time.time()))
            started = time.time()
            try:
                run = engine.start(Storm, Nothing(), key=key)
                outcome = f"run:{run.id}"
            except EntityBusy:
                outcome = "busy"
            except Exception as error:  # reported, and failed, by the test
                outcome = f"error:{type(error).__name__}:{error}"
            with lock:
                results.append([key, outcome, started, time.time()])

    threads = [threading.Thread(target=storm) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
