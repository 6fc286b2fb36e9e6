"""The wire format: one JSON object per message, readable by any Redis client.

A stream entry has one field, ``__data__`` (the name FastStream reads), holding::

    {"id": "...", "type": "UserCreated", "version": 1, "occurred_at": "...",
     "correlation_id": "...", "causation_id": "...", "producer": "users",
     "headers": {"reply_to": "...", "deadline": "..."}, "payload": {...}}

Pub/Sub replies carry the same object as the message. docs/wire-format.md is the spec.
"""

import base64
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec
from faststream.redis.parser.message import MessageFormat

from bus.signing import Signer
from schemas import envelope
from schemas.envelope import ENVELOPE_FIELDS, MESSAGE_ID, SCHEMA_VERSION, SIGNATURE

DATA_FIELD = envelope.DATA_FIELD
JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"
BASE64 = "base64"
_TRANSFER_ENCODING = "content-transfer-encoding"
_CONTENT_TYPE = "content-type"
_FASTSTREAM_ID = "message_id"
_TOP_LEVEL = frozenset(ENVELOPE_FIELDS)


class _Wire(msgspec.Struct, omit_defaults=True):
    id: str | None = None
    type: str | None = None
    version: int | None = None
    occurred_at: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    producer: str | None = None
    headers: dict[str, str] = {}
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Type(msgspec.Struct):
    type: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Wire)
_type_decoder = msgspec.json.Decoder(_Type)


def encode(
    headers: Mapping[str, Any], payload: bytes, content_type: str | None = JSON, *, signer: Signer | None = None
) -> bytes:
    """One message as JSON. ``payload`` is JSON already when ``content_type`` says so.

    With ``signer``, the message gets its producer's ``signature`` header (bus.signing).
    """
    top: dict[str, Any] = {}
    rest: dict[str, str] = {}
    for key, value in headers.items():
        if value is None or key == _CONTENT_TYPE:
            continue
        if key == _FASTSTREAM_ID:
            top.setdefault(MESSAGE_ID, str(value))
        elif key == SCHEMA_VERSION:
            top[key] = int(value)
        elif key in _TOP_LEVEL:
            top[key] = str(value)
        elif key == SIGNATURE and signer is not None:
            continue  # signed afresh below
        else:
            rest[key] = str(value)
    if content_type == JSON and payload:
        raw = payload
    else:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            # Bytes that are not text travel as base64, never silently mangled.
            text = base64.b64encode(payload).decode()
            rest[_TRANSFER_ENCODING] = BASE64
        raw = _encoder.encode(text)
        if payload or content_type:
            rest[_CONTENT_TYPE] = content_type or (BINARY if _TRANSFER_ENCODING in rest else TEXT)
    if signer is not None:
        rest[SIGNATURE] = signer.sign({**top, **rest}, raw)
    return _encoder.encode(_Wire(**top, headers=rest, payload=msgspec.Raw(raw)))


def decode(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The payload bytes and flat headers of one message; never raises.

    Bytes that are not a busway message come back unchanged with no headers, so the
    handler's validation reports them as an invalid payload.
    """
    try:
        wire = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return data, {}
    headers: dict[str, Any] = dict(wire.headers)
    for key in ENVELOPE_FIELDS:
        value = getattr(wire, key)
        if value is not None:
            headers[key] = value
    if wire.id is not None:
        headers[_FASTSTREAM_ID] = wire.id
    payload = bytes(wire.payload)
    if headers.get(_CONTENT_TYPE, JSON) == JSON:
        headers[_CONTENT_TYPE] = JSON
        return payload, headers
    try:
        text = msgspec.json.decode(payload, type=str)
        payload = base64.b64decode(text) if headers.get(_TRANSFER_ENCODING) == BASE64 else text.encode()
    except (msgspec.DecodeError, ValueError):
        return data, {}
    return payload, headers


def type_of(data: bytes) -> str | None:
    """The ``type`` of one message, the rest of it unread; None if it has none or is no busway message."""
    try:
        return _type_decoder.decode(data).type
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


class JsonEnvelopeFormat(MessageFormat):
    """FastStream message format that writes and reads busway's JSON envelope."""

    __slots__ = ()
    content_type: ClassVar[str] = JSON
    signer: ClassVar[Signer | None] = None
    """Signs everything this format encodes; ``bus.broker.create_broker`` sets it per service."""

    @classmethod
    async def encode(
        cls,
        *,
        message: Sequence[Any] | Any,
        reply_to: str | None,
        headers: dict[str, Any] | None,
        correlation_id: str,
        serializer: Any = None,
        codec: Any = None,
    ) -> bytes:
        """Encode ``message`` with its headers as one JSON envelope."""
        msg = await cls.build(
            message=message,
            reply_to=reply_to,
            headers=headers,
            correlation_id=correlation_id,
            serializer=serializer,
            codec=codec,
        )
        return encode(msg.headers, msg.data, msg.headers.get(_CONTENT_TYPE), signer=cls.signer)

    @classmethod
    def parse(cls, data: bytes) -> tuple[bytes, dict[str, Any]]:
        """Split an envelope into payload bytes and headers."""
        return decode(data)
