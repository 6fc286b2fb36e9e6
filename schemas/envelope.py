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
SIGNATURE: Final = "signature"
"""``v1:<key id>:<hex HMAC-SHA256>`` by the producer's key over the canonical envelope (docs/security.md)."""

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

DATA_FIELD: Final = "__data__"
"""The one field of a stream entry: its value is the message, a JSON object."""

REPLY_KEY: Final = "reply_key"
"""Header naming the request a reply answers, when that is not its ``causation_id``."""

HEADERS: Final[dict[str, str]] = {
    REPLY_TO: "Commands: the Pub/Sub channel to publish the reply to.",
    DEADLINE: (
        "Commands sent by busway's requester: Unix time in milliseconds (a string) after which the "
        "command must not be executed; the handler replies `expired` instead."
    ),
    SIGNATURE: (
        "Every message: `v1:<key id>:<hex>`, the HMAC-SHA256 of the canonical envelope by the producer's key "
        "(docs/wire-format.md#signatures). Messages without a valid one are refused."
    ),
    REPLY_KEY: (
        "Some replies: the key of the request this message answers, when that is not its `causation_id`. "
        "The registration outcome uses `<register command id>/outcome`."
    ),
    "content-type": (
        "Non-JSON payloads only: `payload` is then a JSON string holding the text, and this names its type "
        "(`text/plain`). Absent for JSON payloads, which is everything busway itself sends."
    ),
    "content-transfer-encoding": (
        "Binary payloads only: `base64`; `payload` is a JSON string holding the bytes in base64 "
        "(`content-type` is then `application/octet-stream`)."
    ),
}
"""The keys busway puts in ``headers``, and what each means; others are passed through."""

DEAD_LETTER_FIELDS: Final[dict[str, str]] = {
    DATA_FIELD: "The original entry's message, unchanged (the JSON object).",
    "source_stream": "The stream the entry was read from, prefix included.",
    "source_id": "The entry's id in that stream.",
    "group": "The consumer group that failed to handle it.",
    "attempts": "How many times it was delivered (a decimal string).",
    "error": "The last error its handler raised.",
    "correlation_id": "The message's correlation id.",
    "dead_lettered_at": "When it was moved (ISO 8601 with UTC offset).",
}
"""The fields of an entry in a dead-letter stream ``dlq.<stream>``; all values are strings."""


class Envelope(Contract):
    """One message as it travels: metadata, transport headers and the payload."""

    id: str = Field(
        description=(
            "The message id (32 hex characters from busway), unique per message. An event keeps its id when the "
            "relay publishes it twice: deduplicate on it."
        )
    )
    type: str = Field(
        description=(
            "Events: the event type. Commands: the command's contract name. Replies: the result's contract name, "
            "or `busway.Error`."
        )
    )
    version: int = Field(
        default=1,
        description="Events: the schema version of `payload` for this `type`. Absent on commands and replies.",
    )
    occurred_at: datetime = Field(
        description="ISO 8601 with UTC offset: when the event was recorded, or the message was published."
    )
    correlation_id: str = Field(
        description=(
            "The id of the whole piece of work: the HTTP request's `X-Request-ID` for everything a request causes."
        )
    )
    causation_id: str | None = Field(
        default=None,
        description=(
            "The `id` of the message whose handling produced this one (a reply's is its command's `id`). "
            "Absent on commands sent by the gateway."
        ),
    )
    producer: str = Field(description="The service that published it: `gateway`, `auth`, `users`, ...")
    headers: dict[str, str] = Field(
        default_factory=dict, description="String to string. Unknown keys are passed through."
    )
    payload: Any = Field(description="The body: a JSON value, the contract's fields.")


class Trace(Contract):
    """What a message caused by another one inherits from it."""

    correlation_id: str
    causation_id: str | None = None
