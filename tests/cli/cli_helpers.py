"""What the command's tests share: saga references and small look-ups."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from definitions.checkout import Shop

CHECKOUT = "definitions.checkout:CompleteCart"
RESOURCES = ["--resources", "definitions.checkout:resources"]
LINEAR = "sagas:Linear"  # tests/sagas.py: three steps that need nothing from outside


def cart(shop: Shop, payment_method: str = "card_ok") -> str:
    """JSON input of a checkout of a new cart of two mugs."""
    return json.dumps({"cart_id": shop.create_cart({"mug": 2}, payment_method=payment_method)})


def rows(path: Path) -> int:
    """How many runs the SQLite store at ``path`` holds."""
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM statesaga_instances").fetchone()[0])
