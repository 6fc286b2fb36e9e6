"""Helpers for subscribers: decode a typed event, and the trace a message passes on."""

from typing import Any

import msgspec
from faststream.message import StreamMessage
from loguru import logger

from schemas.envelope import SCHEMA_VERSION, TYPE, Trace
from schemas.events import EVENT_TYPES, Event


def decode_event(body: bytes, headers: dict[str, Any]) -> Event | None:
    """The typed event in a message, or None for a type or version this code does not know.

    Unknown types are skipped, not failed: producers may add event types before every
    consumer knows them. Unknown payload fields are ignored: producers may add optional
    fields (a compatible change, docs/events.md#versioning) before every consumer is
    redeployed. A payload that does not match its schema raises ValidationError.
    """
    known = EVENT_TYPES.get(str(headers.get(TYPE)))
    if known is None:
        return None
    model, version = known
    if int(headers.get(SCHEMA_VERSION, 1)) != version:
        logger.warning(
            "skipping {} v{}: this consumer knows v{}", headers.get(TYPE), headers.get(SCHEMA_VERSION), version
        )
        return None
    return _validate_known_fields(model, body)


def _validate_known_fields(model: type[Event], body: bytes) -> Event:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return model.model_validate_json(body)  # raises the ValidationError that says why
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key in model.model_fields}
    return model.model_validate(data)


def trace_of(message: StreamMessage[Any]) -> Trace:
    """What messages caused by ``message`` inherit: its correlation, and it as the cause."""
    return Trace(correlation_id=message.correlation_id, causation_id=message.message_id)
