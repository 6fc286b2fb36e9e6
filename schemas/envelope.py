"""The envelope: the metadata every message on the bus carries, beside its payload.

On the wire an entry of a stream (or a Pub/Sub message) is one JSON object; see
docs/wire-format.md. The header names below are the keys of that object.
"""

from datetime import datetime
from typing import Any, Final

from pydantic import Field

from schemas.base import Contract

MESSAGE_ID: Final = "id"
TYPE: Final = "type"
SCHEMA_VERSION: Final = "version"
OCCURRED_AT: Final = "occurred_at"
CORRELATION_ID: Final = "correlation_id"
CAUSATION_ID: Final = "causation_id"
PRODUCER: Final = "producer"
REPLY_TO: Final = "reply_to"
DEADLINE: Final = "deadline"
"""Unix time in milliseconds after which a command must not be executed."""

ENVELOPE_FIELDS: Final = (
    MESSAGE_ID,
    TYPE,
    SCHEMA_VERSION,
    OCCURRED_AT,
    CORRELATION_ID,
    CAUSATION_ID,
    PRODUCER,
)

ERROR_TYPE: Final = "busway.Error"
"""The ``type`` of a reply that carries an :class:`schemas.errors.ErrorReply`."""


class Envelope(Contract):
    """One message as it travels: metadata, transport headers and the payload."""

    id: str
    type: str
    version: int = 1
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None
    producer: str
    headers: dict[str, str] = Field(default_factory=dict)
    payload: Any


class Trace(Contract):
    """What a message caused by another one inherits from it."""

    correlation_id: str
    causation_id: str | None = None
