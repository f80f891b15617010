"""Where instances and their history live: the ``Store`` protocol and ``SqlStore``."""

from statesaga.store.base import HistoryRow, InstanceRow, Store, Write
from statesaga.store.sql import SqlStore

__all__ = ["HistoryRow", "InstanceRow", "SqlStore", "Store", "Write"]
