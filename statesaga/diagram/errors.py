"""The diagram's error."""

from __future__ import annotations

from statesaga.errors import StateSagaError

__all__ = ["DiagramError"]


class DiagramError(StateSagaError):
    """A diagram could not be drawn, loaded or checked; the message says what to do.

    >>> issubclass(DiagramError, StateSagaError)
    True
    """
