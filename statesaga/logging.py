"""Logging: statesaga's loggers, the fields its records carry, and a JSON formatter.

statesaga logs through the standard library under one hierarchy:
``statesaga.engine`` (runs), ``statesaga.worker`` and ``statesaga.retention``.
Every record about a run carries, as attributes, ``instance_id``, ``saga``,
``state``, ``step`` and ``correlation_id``:

- a run started, completed, compensated: ``INFO``; a compensation that worked: ``INFO``;
- every persisted transition: ``DEBUG``;
- a step or compensation attempt that failed (to be retried or compensated): ``WARNING``;
- a run left ``failed``: ``ERROR``.

>>> import logging
>>> record = logging.LogRecord("statesaga.engine", logging.INFO, "", 0, "started %s", ("x",), None)
>>> record.correlation_id = "order-7"
>>> print(JsonFormatter(timestamps=False).format(record))
{"level": "INFO", "logger": "statesaga.engine", "message": "started x", "correlation_id": "order-7"}
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["RUN_FIELDS", "JsonFormatter", "configure"]

#: the attributes every record about a run carries
RUN_FIELDS = ("instance_id", "saga", "state", "step", "correlation_id")

# attributes every LogRecord has: anything else was passed with extra=...
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run's fields, any extras.

    Fields that are ``None`` are left out; an exception is added as ``exception``.

    Args:
        timestamps: include ``time`` (ISO 8601, UTC).
    """

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {}
        if self.timestamps:
            data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            )
        data["level"] = record.levelname
        data["logger"] = record.name
        data["message"] = record.getMessage()
        for name, value in vars(record).items():
            if name not in _STANDARD and value is not None and not name.startswith("_"):
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(level: int | str = logging.INFO, *, json_lines: bool = False) -> None:
    """Send statesaga's logs (and the root logger's) to stderr, as text or JSON lines.

    For applications and the command line; a library embedding statesaga
    configures logging itself.
    """
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
