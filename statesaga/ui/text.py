"""Small formatters for the pages: times, spans, ages and JSON.

>>> when(0.0), span(0.0123), span(75.0), ago(3 * 3600 + 5)
('1970-01-01 00:00:00 UTC', '12.3 ms', '1 min 15 s', '3 h ago')
>>> print(pretty_json({"b": [1, 2], "a": "<x>"}))
{
  "b": [
    1,
    2
  ],
  "a": "<x>"
}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["ago", "pretty_json", "span", "when"]


def when(timestamp: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC`` (empty for none)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """A duration a person reads at a glance."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def ago(seconds: float) -> str:
    """How long ago, roughly (``12s ago``, ``5 min ago``)."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (what cannot be JSON is shown as its ``repr``)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
