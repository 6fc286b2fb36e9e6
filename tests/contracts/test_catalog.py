"""The declarations the docs are generated from agree with the code: every event type has a
stream, every command a route, and the running services subscribe and publish as declared."""

import inspect
import typing
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from sqlmodel import select

from handlers.auth.models import Outbox as AuthOutbox
from handlers.users.models import Outbox as UsersOutbox
from schemas import commands as commands_module
from schemas import events as events_module
from schemas import streams
from schemas.base import Contract
from schemas.catalog import CatalogError, event_stream, producer_of
from schemas.commands import COMMANDS
from schemas.events import EVENT_STREAMS, EVENT_TYPES, Event
from tests.e2e.conftest import register_and_login
from tests.harness import Databases, System, run_system


def test_every_event_class_is_registered_with_a_stream() -> None:
    classes = {
        name
        for name, value in vars(events_module).items()
        if inspect.isclass(value) and issubclass(value, Event) and value is not Event
    }
    missing = sorted(classes - set(EVENT_TYPES))
    assert missing == [], f"add {missing} to EVENT_TYPES in schemas/events.py"
    without_stream = sorted(set(EVENT_TYPES) - set(EVENT_STREAMS))
    assert without_stream == [], f"add {without_stream} to EVENT_STREAMS in schemas/events.py (the producer's stream)"
    assert sorted(set(EVENT_STREAMS) - set(EVENT_TYPES)) == []
    event_streams = {value for name, value in vars(streams).items() if name.startswith("EVENTS_")}
    for stream in EVENT_STREAMS.values():
        assert stream in event_streams


def test_an_undeclared_stream_is_a_clear_error() -> None:
    with pytest.raises(CatalogError, match=r"'Nope' has no stream: add it to EVENT_STREAMS in schemas/events.py"):
        event_stream("Nope")
    with pytest.raises(CatalogError, match="not an event stream"):
        producer_of("auth.login")


def test_every_command_contract_has_a_route() -> None:
    routed = {route.command for route in COMMANDS}
    declared = {
        value
        for value in vars(commands_module).values()
        if inspect.isclass(value)
        and issubclass(value, Contract)
        and value.__module__ == commands_module.__name__
        and value is not Contract
    }
    missing = sorted(model.__name__ for model in declared - routed)
    assert missing == [], f"add a CommandRoute for {missing} to COMMANDS in schemas/commands.py"
    command_streams = {
        value for name, value in vars(streams).items() if name.isupper() and isinstance(value, str) and "." in value
    }
    assert {route.stream for route in COMMANDS} <= command_streams


def _handled_commands(system: System) -> dict[str, tuple[Any, Any]]:
    """Each command stream the running services read -> (its handler's contract, its reply)."""
    found: dict[str, tuple[Any, Any]] = {}
    for runtime in system.services.values():
        for subscriber in runtime.broker.subscribers:
            stream = cast(Any, subscriber).stream_sub.name.removeprefix(system.prefix)
            if stream not in {name.removeprefix(system.prefix) for name in runtime.consumer.command_streams}:
                continue
            if cast(Any, subscriber).stream_sub.batch:
                continue  # the batch reader runs the handler per entry; its claimer calls it as it is
            handler = subscriber.calls[0].handler._original_call
            hints = typing.get_type_hints(handler)
            first = next(iter(inspect.signature(handler).parameters))
            found[stream] = (hints[first], hints["return"])
    return found


@pytest.fixture
async def every_service(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with every service that handles commands or events."""
    async with run_system(databases, redis_url=redis_url, include=("activity", "mailer")) as running:
        yield running


@pytest.mark.integration
async def test_the_running_services_handle_and_publish_what_is_declared(every_service: System) -> None:
    system = every_service
    handled = _handled_commands(system)
    declared = {route.stream: (route.command, route.reply) for route in COMMANDS}
    wrong = {
        stream: f"handler takes {command.__name__} and returns {reply.__name__}"
        for stream, (command, reply) in handled.items()
        if declared.get(stream) != (command, reply)
    }
    assert wrong == {}, "make COMMANDS in schemas/commands.py say what the handlers do (then `uv run just contracts`)"
    assert sorted(declared.keys() - handled.keys()) == [], "COMMANDS names streams no service handles"

    account = await register_and_login(system, display_name="Catalog")
    response = await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": "Catalog 2"})
    assert response.status_code == 200
    published: list[tuple[str, str, str]] = []
    for service, outbox in (("auth", AuthOutbox), ("users", UsersOutbox)):
        async with system.sessions(service)() as session:
            rows = (await session.exec(select(outbox).where(outbox.subject == account.user_id))).all()
        published += [(row.type, row.stream, row.producer) for row in rows]
    assert {kind for kind, _, _ in published} >= {
        "RegistrationStarted",
        "UserCreated",
        "RegistrationCompleted",
        "UserLoggedIn",
        "UserUpdated",
    }
    for kind, stream, producer in published:
        assert (stream, producer) == (EVENT_STREAMS[kind], producer_of(EVENT_STREAMS[kind])), kind
