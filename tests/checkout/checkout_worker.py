"""A child process of the hot-SKU test: one shop completing many carts at once.

Usage (the tests run it with ``sys.executable``)::

    checkout_worker.py URL CART [CART ...]

It opens its own :class:`~definitions.checkout.Shop` (its own engine, its own
``SimulatedProvider``) on ``URL``, starts one thread per cart, prints
``ready`` and waits for a line on stdin: the test answers ``go`` once every
process is ready, so that the checkouts of all processes race each other.
Every thread completes its cart once; the process then prints, as JSON, one
``[cart, outcome]`` per cart and the number of payments its provider holds
as authorized. An outcome is ``completed:<order id>``,
``insufficient:<sku>:<requested>:<available>``, or ``error:<type>:<message>``
(anything else, which the test rejects).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence

from definitions.checkout import InsufficientStock, Shop, SimulatedProvider


def complete(shop: Shop, cart_id: str, go: threading.Event) -> str:
    go.wait()
    try:
        result = shop.complete(cart_id)
    except InsufficientStock as error:
        return f"insufficient:{error.sku}:{error.requested}:{error.available}"
    except Exception as error:  # reported, and failed, by the test
        return f"error:{type(error).__name__}:{error}"
    return f"completed:{result.order_id}"


def main(argv: Sequence[str]) -> None:
    url, *carts = argv
    provider = SimulatedProvider()
    outcomes: dict[str, str] = {}
    go = threading.Event()

    def work(cart_id: str) -> None:
        outcomes[cart_id] = complete(shop, cart_id, go)

    with Shop.open(url, provider=provider) as shop:
        threads = [threading.Thread(target=work, args=(cart,)) for cart in carts]
        for thread in threads:
            thread.start()
        print("ready", flush=True)
        sys.stdin.readline()
        go.set()
        for thread in threads:
            thread.join()
    report = {"outcomes": sorted(outcomes.items()), "authorized": len(provider.authorized())}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
