"""Contracts are frozen, strict about unknown fields, and normalise what they accept."""

import pydantic
import pytest

from schemas.commands import RegisterUser
from schemas.errors import ErrorCode, ErrorReply, ReplyError
from schemas.events import EVENT_TYPES, RegistrationStarted


def test_contracts_refuse_unknown_fields_and_changes() -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        RegisterUser.model_validate({"email": "a@b.co", "password": "12345678", "display_name": "A", "role": "x"})
    command = RegisterUser(email="A@Example.COM", password="12345678", display_name="  Ann ")
    assert command.email == "a@example.com"
    assert command.display_name == "Ann"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        command.email = "b@example.com"  # type: ignore[misc]


def test_every_event_type_is_registered_by_its_name() -> None:
    assert EVENT_TYPES["RegistrationStarted"] == (RegistrationStarted, 1)
    assert all(name == model.__name__ for name, (model, _) in EVENT_TYPES.items())


def test_reply_errors_survive_the_round_trip() -> None:
    error = ReplyError("taken", code=ErrorCode.EMAIL_TAKEN, extra={"registration_id": "r1"})
    wire = error.reply.model_dump_json()
    again = ReplyError.from_reply(ErrorReply.model_validate_json(wire))
    assert again.reply == error.reply
    assert str(again) == "taken"
