"""The exported event log: one JSON object per line, an event and the stream it belongs to.

``python -m handlers.<service> eventlog`` writes a service's event log in this format, and
``busway replay --from-log`` / ``--from-file`` read it. A line looks like::

    {"stream": "events.users", "position": "42",
     "message": {"id": "...", "type": "UserCreated", "version": 1, "occurred_at": "...",
                 "correlation_id": "...", "causation_id": "...", "producer": "users",
                 "payload": {...}}}

``message`` is exactly what the stream entry's ``__data__`` holds (docs/wire-format.md).
"""

from schemas.base import Contract
from schemas.envelope import Envelope


class EventLogRecord(Contract):
    """One exported event: the stream it goes to (without prefix), where it came from, the message."""

    stream: str
    position: str | None = None
    """Where the event sits in its source: the outbox ``seq``, or a stream entry id."""
    message: Envelope
