"""What ``send`` and ``cancel`` answer: the event's place in the run's inbox.

Sending records the event durably first (deduplicated by its event id), then
consumes it if the run is free. A busy run, a holder that just lost its claim
or a duplicate delivery is never an error to the sender: the event waits in
the inbox and whoever drives the run next takes it.

>>> from statesaga.delivery import DeliveryStatus
>>> [s.value for s in DeliveryStatus]
['pending', 'accepted', 'rejected']
"""

from __future__ import annotations

import attrs

from statesaga.run import DeliveryStatus, InboxEntry, Run

__all__ = ["Delivery", "DeliveryStatus", "InboxEntry"]


@attrs.frozen
class Delivery:
    """The answer to ``send``/``cancel``: where the event stands, and the run as it stands.

    Attributes:
        event_id: the event's id (the caller's, or one made up).
        event: the event's name (``None`` for a cancel).
        instance_id: the run it was sent to.
        status: pending, accepted or rejected (see :class:`DeliveryStatus`).
        reason: why it was rejected.
        duplicate: an event with this id had been sent before; this is that one.
        run: the run after the event was consumed, or as stored if it is pending.
    """

    event_id: str
    event: str | None
    instance_id: str
    status: DeliveryStatus
    reason: str | None
    duplicate: bool
    run: Run

    @property
    def accepted(self) -> bool:
        """The event was applied to the run."""
        return self.status is DeliveryStatus.ACCEPTED
