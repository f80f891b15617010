"""Where instances and their history live: the ``Store`` protocol and ``SqlStore``.

The protocol and its row types import nothing heavy; ``SqlStore`` (which
pulls in SQLAlchemy) is loaded on first use, so code that only names the
protocol, such as a store of its own or a type annotation, does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statesaga.store.base import HistoryRow, InstanceRow, Store, Write

if TYPE_CHECKING:
    from statesaga.store.sql import SqlStore

__all__ = ["HistoryRow", "InstanceRow", "SqlStore", "Store", "Write"]


def __getattr__(name: str) -> Any:
    if name != "SqlStore":
        raise AttributeError(f"module 'statesaga.store' has no attribute {name!r}")
    from statesaga.store.sql import SqlStore

    globals()[name] = SqlStore
    return SqlStore
