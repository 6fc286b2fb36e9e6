"""busway's own event consumers read events as docs/events.md asks any consumer to."""

import pydantic
import pytest

from bus.events import decode_event
from schemas.events import UserUpdated

HEADERS = {"type": "UserUpdated", "version": 1}


def test_a_known_event_is_typed() -> None:
    event = decode_event(b'{"user_id": "u1", "changes": {"display_name": "Ann"}}', HEADERS)
    assert event == UserUpdated(user_id="u1", changes={"display_name": "Ann"})


def test_a_field_added_by_a_newer_producer_is_ignored() -> None:
    body = b'{"user_id": "u1", "changes": {}, "changed_by": "admin"}'
    assert decode_event(body, HEADERS) == UserUpdated(user_id="u1", changes={})


def test_unknown_types_and_versions_are_skipped() -> None:
    body = b'{"user_id": "u1", "changes": {}}'
    assert decode_event(body, {"type": "SomethingNew", "version": 1}) is None
    assert decode_event(body, {"type": "UserUpdated", "version": 2}) is None


@pytest.mark.parametrize("body", [b'{"user_id": "u1"}', b"not json", b'["u1"]'])
def test_a_payload_that_breaks_its_contract_is_refused(body: bytes) -> None:
    with pytest.raises(pydantic.ValidationError):
        decode_event(body, HEADERS)
