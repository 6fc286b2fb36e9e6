"""The wire format: one readable JSON object per message, and a parser that never raises."""

import json

from bus import wire


def test_round_trip_keeps_envelope_headers_and_payload() -> None:
    headers = {
        "id": "m1",
        "type": "UserCreated",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "correlation_id": "c1",
        "causation_id": "m0",
        "producer": "users",
        "reply_to": "inbox.gateway-1",
        "deadline": "123",
        "content-type": "application/json",
    }
    data = wire.encode(headers, b'{"user_id":"u1"}')
    payload, decoded = wire.decode(data)
    assert json.loads(payload) == {"user_id": "u1"}
    assert decoded["message_id"] == "m1"
    for key in ("type", "correlation_id", "causation_id", "producer", "reply_to", "deadline"):
        assert decoded[key] == headers[key]
    assert decoded["version"] == 1


def test_the_entry_is_plain_json_with_envelope_at_top_level() -> None:
    data = wire.encode({"id": "m1", "type": "T", "reply_to": "inbox.x", "correlation_id": "c"}, b'{"a":1}')
    document = json.loads(data)
    assert document == {
        "id": "m1",
        "type": "T",
        "correlation_id": "c",
        "headers": {"reply_to": "inbox.x"},
        "payload": {"a": 1},
    }


def test_text_payloads_travel_as_json_strings() -> None:
    data = wire.encode({"id": "m"}, b"hello", wire.TEXT)
    assert json.loads(data)["payload"] == "hello"
    payload, headers = wire.decode(data)
    assert payload == b"hello"
    assert headers["content-type"] == wire.TEXT


def test_binary_payloads_travel_as_base64_and_come_back_intact() -> None:
    blob = bytes(range(256))
    data = wire.encode({"id": "m"}, blob, None)
    document = json.loads(data)
    assert document["headers"]["content-transfer-encoding"] == "base64"
    payload, headers = wire.decode(data)
    assert payload == blob
    assert headers["content-type"] == wire.BINARY


def test_foreign_bytes_come_back_unchanged_without_headers() -> None:
    for garbage in (b"\x89BIN\x00\x01", b"not json", b"[1,2]", b'{"payload": }'):
        payload, headers = wire.decode(garbage)
        assert payload == garbage
        assert headers == {}
