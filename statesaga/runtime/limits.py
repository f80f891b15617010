"""How large a run's JSON may grow: input, context, output and event payloads.

Every transition rewrites a run's whole context, so a context of megabytes
costs milliseconds on every step and memory several times its size. The
limit turns that into a clear error where the payload is made: a start or a
send is refused before anything is written, and a step whose new context (or
the run's output) is too large fails without retrying, so the run compensates.

>>> limit = PayloadLimit(100)
>>> limit.encoded({"sku": "mug"}, "input", saga="checkout")
'{"sku":"mug"}'
>>> limit.encoded({"blob": "x" * 200}, "input", saga="checkout")
Traceback (most recent call last):
...
statesaga.errors.PayloadTooLarge: the input of saga 'checkout' is 211 bytes of JSON, over the \
limit of 100 (max_payload_bytes): keep large data outside the run (store it and pass a \
reference) or raise max_payload_bytes
>>> PayloadLimit(None).encoded({"blob": "x" * 200}, "input", saga="checkout")[:10]
'{"blob":"x'
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga.errors import PayloadTooLarge
from statesaga.serde import dumps

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "PayloadLimit"]

#: 2 MiB, as Temporal limits a payload: well above a business context, well below trouble
DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


@attrs.frozen
class PayloadLimit:
    """The largest JSON (in bytes) a run's input, context, output or event payload may take.

    ``None`` means no limit.
    """

    max_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES

    def encoded(
        self,
        value: Any,
        what: str,
        *,
        saga: str,
        instance_id: str | None = None,
        state: str | None = None,
    ) -> str:
        """``value`` (already unstructured) as JSON text, or :class:`PayloadTooLarge`."""
        text = dumps(value)
        self.check(text, what, saga=saga, instance_id=instance_id, state=state)
        return text

    def check(
        self,
        text: str,
        what: str,
        *,
        saga: str,
        instance_id: str | None = None,
        state: str | None = None,
    ) -> None:
        """Raise :class:`PayloadTooLarge` when ``text`` is over the limit."""
        limit = self.max_bytes
        # the encoder escapes non-ASCII, so characters are bytes
        if limit is None or len(text) <= limit:
            return
        raise PayloadTooLarge(
            f"the {what} of saga {saga!r} is {len(text):,} bytes of JSON, over the limit of "
            f"{limit:,} (max_payload_bytes): keep large data outside the run (store it and "
            "pass a reference) or raise max_payload_bytes",
            what=what,
            size=len(text),
            limit=limit,
            saga=saga,
            instance_id=instance_id,
            state=state,
        )
