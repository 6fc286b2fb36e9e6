"""The contracts checker: it tells every incompatible kind of change from the compatible ones."""

import copy
from enum import StrEnum
from typing import Any

import pytest
from pydantic import Field

from schemas.base import Contract
from schemas.catalog import contracts
from schemas.compatibility import Change, breaking, compare


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


class ColourMore(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class UpdatedV1(Contract):
    """The event as the snapshot has it."""

    user_id: str
    changes: dict[str, str]
    colour: Colour = Colour.RED


def catalog(
    event: type[Contract] | None = UpdatedV1,
    *,
    name: str = "UserUpdated",
    version: int = 1,
    stream: str = "events.users",
    command: type[Contract] | None = None,
    reply: type[Contract] | None = None,
    reply_name: str = "Profile",
) -> dict[str, Any]:
    """A contracts dict as schemas.catalog.contracts() makes it, from the models given."""
    return {
        "events": {}
        if event is None
        else {name: {"version": version, "stream": stream, "schema": event.model_json_schema()}},
        "commands": {}
        if command is None
        else {
            "users.update": {
                "type": "UpdateUser",
                "reply": reply_name,
                "schema": command.model_json_schema(),
            }
        },
        "replies": {} if reply is None else {reply_name: {"schema": reply.model_json_schema()}},
    }


def only(changes: list[Change]) -> Change:
    assert len(changes) == 1, [str(change) for change in changes]
    return changes[0]


def test_the_same_contracts_have_no_changes() -> None:
    assert compare(contracts(), contracts()) == []


def test_a_removed_field_is_incompatible_and_the_message_says_how_to_do_it() -> None:
    class Updated(Contract):
        user_id: str
        colour: Colour = Colour.RED

    change = only(compare(catalog(), catalog(Updated)))
    assert change.breaking
    assert (change.contract, change.field) == ("event UserUpdated", "changes")
    text = str(change)
    assert text.startswith("INCOMPATIBLE: event UserUpdated, field `changes`: the field was removed")
    assert "keep `UserUpdated` (version 1) exactly as it is" in text
    assert "`UserUpdatedV2` with version 2" in text


def test_a_changed_field_type_is_incompatible() -> None:
    class Updated(Contract):
        user_id: int
        changes: dict[str, str]
        colour: Colour = Colour.RED

    change = only(compare(catalog(), catalog(Updated)))
    assert change.breaking
    assert change.field == "user_id"
    assert "the type changed from string to integer" in change.detail


def test_a_tighter_constraint_is_a_type_change() -> None:
    class Updated(Contract):
        user_id: str = Field(max_length=10)
        changes: dict[str, str]
        colour: Colour = Colour.RED

    change = only(compare(catalog(), catalog(Updated)))
    assert change.breaking
    assert change.field == "user_id"


def test_a_new_required_field_is_incompatible() -> None:
    class Updated(Contract):
        user_id: str
        changes: dict[str, str]
        colour: Colour = Colour.RED
        reason: str

    change = only(compare(catalog(), catalog(Updated)))
    assert change.breaking
    assert (change.field, change.detail) == ("reason", "a new required field; earlier messages lack it")


def test_a_field_that_becomes_required_is_incompatible() -> None:
    class Updated(Contract):
        user_id: str
        changes: dict[str, str]
        colour: Colour

    change = only(compare(catalog(), catalog(Updated)))
    assert change.breaking
    assert change.field == "colour"
    assert "became required" in change.detail


def test_a_removed_enum_value_is_incompatible_and_an_added_one_is_not() -> None:
    class Fewer(StrEnum):
        RED = "red"

    class Narrower(Contract):
        user_id: str
        changes: dict[str, str]
        colour: Fewer = Fewer.RED

    class Wider(Contract):
        user_id: str
        changes: dict[str, str]
        colour: ColourMore = ColourMore.RED

    narrowed = only(compare(catalog(), catalog(Narrower)))
    assert narrowed.breaking
    assert (narrowed.field, narrowed.detail) == ("colour", "values removed: green")
    widened = only(compare(catalog(), catalog(Wider)))
    assert not widened.breaking
    assert widened.detail == "values added: blue"


def test_a_removed_event_type_is_incompatible_and_a_new_one_is_not() -> None:
    removed = only(compare(catalog(), catalog(None)))
    assert removed.breaking
    assert (removed.contract, removed.field) == ("event UserUpdated", None)
    assert "removed" in removed.detail
    added = only(compare(catalog(None), catalog()))
    assert not added.breaking
    assert added.detail == "new event type"


def test_a_version_changed_in_place_is_incompatible() -> None:
    change = only(compare(catalog(), catalog(version=2)))
    assert change.breaking
    assert change.detail == "the version changed from 1 to 2 without a new type"
    assert "add `UserUpdatedV2` with version 2" in change.advice


def test_an_event_moved_to_another_stream_is_incompatible() -> None:
    change = only(compare(catalog(), catalog(stream="events.auth")))
    assert change.breaking
    assert "moved from stream events.users to events.auth" in change.detail


def test_a_new_optional_field_and_a_field_made_optional_are_compatible() -> None:
    class Updated(Contract):
        user_id: str
        changes: dict[str, str] = Field(default_factory=dict)
        colour: Colour = Colour.RED
        note: str | None = None

    changes = compare(catalog(), catalog(Updated))
    assert breaking(changes) == []
    assert sorted((change.field, change.detail) for change in changes) == [
        ("changes", "the field became optional"),
        ("note", "a new optional field"),
    ]


def test_descriptions_titles_and_renamed_nested_types_change_nothing() -> None:
    class Tint(StrEnum):
        RED = "red"
        GREEN = "green"

    class Updated(Contract):
        """Another docstring."""

        user_id: str = Field(description="whose profile", title="User")
        changes: dict[str, str]
        colour: Tint = Tint.RED

    assert compare(catalog(), catalog(Updated)) == []


class Profile(Contract):
    id: str
    email: str


class Result(Contract):
    user: Profile | None = None
    items: tuple[Profile, ...] = ()


def test_nested_fields_are_compared_and_named_by_path() -> None:
    class ProfileWithoutEmail(Contract):
        id: str

    class Narrowed(Contract):
        user: ProfileWithoutEmail | None = None
        items: tuple[ProfileWithoutEmail, ...] = ()

    changes = compare(catalog(None, reply=Result), catalog(None, reply=Narrowed))
    assert {(change.contract, change.field, change.breaking) for change in changes} == {
        ("reply Profile", "user.email", True),
        ("reply Profile", "items[].email", True),
    }


class Update(Contract):
    user_id: str
    display_name: str | None = None


def test_command_changes() -> None:
    class UpdateTyped(Contract):
        user_id: str
        display_name: int | None = None

    before = catalog(None, command=Update, reply=Profile)
    removed = only(compare(before, catalog(None, reply=Profile)))
    assert removed.breaking
    assert removed.contract == "command users.update (UpdateUser)"
    retyped = only(compare(before, catalog(None, command=UpdateTyped, reply=Profile)))
    assert retyped.breaking
    assert retyped.field == "display_name"
    assert "new stream" in retyped.advice
    other_reply = catalog(None, command=Update, reply=Profile, reply_name="Other")
    kinds = {(change.contract, change.detail, change.breaking) for change in compare(before, other_reply)}
    assert kinds == {
        ("command users.update (UpdateUser)", "the reply type changed from Profile to Other", True),
        ("reply Profile", "the reply type was removed", True),
        ("reply Other", "new reply type", False),
    }


def test_the_real_contracts_with_a_field_taken_away_are_caught() -> None:
    before = contracts()
    after = copy.deepcopy(before)
    del after["events"]["UserCreated"]["schema"]["properties"]["email"]
    after["events"]["UserCreated"]["schema"]["required"].remove("email")
    del after["commands"]["auth.login"]
    change, removed = breaking(compare(before, after))
    assert (change.contract, change.field) == ("command auth.login (LogIn)", None)
    assert (removed.contract, removed.field) == ("event UserCreated", "email")


@pytest.mark.parametrize("kind", ["events", "commands", "replies"])
def test_everything_new_is_compatible(kind: str) -> None:
    everything = contracts()
    empty = {**everything, kind: {}}
    changes = compare(empty, everything)
    assert changes
    assert breaking(changes) == []
