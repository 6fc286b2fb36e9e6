"""The contracts as data: every command, reply and event with its JSON schema.

The contracts snapshot (schemas/contracts.snapshot.json), docs/events.md and
docs/asyncapi.json are all made from what this module reads out of ``COMMANDS``,
``EVENT_TYPES`` and ``EVENT_STREAMS``; ``uv run just contracts`` writes them.
"""

import json
from typing import Any, Final

from schemas.base import Contract
from schemas.commands import COMMANDS, CommandRoute
from schemas.envelope import ERROR_TYPE
from schemas.errors import ErrorReply
from schemas.events import EVENT_STREAMS, EVENT_TYPES, Event

EVENTS_PREFIX: Final = "events."

JsonSchema = dict[str, Any]


class CatalogError(Exception):
    """The declarations in schemas/ disagree with each other (the message says how to fix it)."""


def producer_of(stream: str) -> str:
    """The service that appends to an event stream: ``events.auth`` -> ``auth``."""
    if not stream.startswith(EVENTS_PREFIX):
        msg = f"{stream!r} is not an event stream (events.<service>)"
        raise CatalogError(msg)
    return stream.removeprefix(EVENTS_PREFIX)


def consumer_of(command_stream: str) -> str:
    """The service that handles a command stream: ``auth.login`` -> ``auth``."""
    return command_stream.split(".", 1)[0]


def event_stream(event_type: str) -> str:
    """The stream ``event_type`` is appended to; CatalogError when it was not declared."""
    try:
        return EVENT_STREAMS[event_type]
    except KeyError:
        msg = (
            f"event type {event_type!r} has no stream: add it to EVENT_STREAMS in schemas/events.py "
            "(the events.<service> stream its producer appends it to)"
        )
        raise CatalogError(msg) from None


def events() -> dict[str, tuple[type[Event], int, str]]:
    """Every event type: name -> (payload model, schema version, stream), in declaration order."""
    unknown = sorted(set(EVENT_STREAMS) - set(EVENT_TYPES))
    if unknown:
        msg = f"EVENT_STREAMS names event types that EVENT_TYPES lacks: {', '.join(unknown)} (schemas/events.py)"
        raise CatalogError(msg)
    return {name: (model, version, event_stream(name)) for name, (model, version) in EVENT_TYPES.items()}


def commands() -> dict[str, CommandRoute]:
    """Every command stream -> its route (command and reply contracts), in declaration order."""
    routes: dict[str, CommandRoute] = {}
    for route in COMMANDS:
        if route.stream in routes:
            msg = f"command stream {route.stream!r} is declared twice in COMMANDS (schemas/commands.py)"
            raise CatalogError(msg)
        routes[route.stream] = route
    return routes


def replies() -> dict[str, type[Contract]]:
    """Every reply contract by its ``type``: the commands' results and ``busway.Error``."""
    found: dict[str, type[Contract]] = {}
    for route in COMMANDS:
        found.setdefault(route.reply.__name__, route.reply)
    found[ERROR_TYPE] = ErrorReply
    return found


def doc(model: type[Contract]) -> str:
    """A contract's docstring as one Markdown paragraph (reST ``code`` becomes Markdown `code`)."""
    lines = (line.strip() for line in (model.__doc__ or "").strip().splitlines())
    return " ".join(line for line in lines if line).replace("``", "`")


def json_schema(model: type[Contract]) -> JsonSchema:
    """The JSON schema (2020-12) a valid payload of ``model`` satisfies, nested types in ``$defs``."""
    return model.model_json_schema(mode="validation")


def contracts() -> dict[str, Any]:
    """Every contract on the bus with its schema: what the snapshot records and the checker compares."""
    return {
        "events": {
            name: {"version": version, "stream": stream, "schema": json_schema(model)}
            for name, (model, version, stream) in events().items()
        },
        "commands": {
            stream: {
                "type": route.command.__name__,
                "reply": route.reply.__name__,
                "schema": json_schema(route.command),
            }
            for stream, route in commands().items()
        },
        "replies": {name: {"schema": json_schema(model)} for name, model in replies().items()},
    }


def tolerant(schema: JsonSchema) -> JsonSchema:
    """``schema`` without ``additionalProperties: false`` anywhere: what a reader should accept.

    Producers may add optional fields to events (a compatible change), so a reader must
    ignore fields it does not know instead of refusing the message.
    """
    result: JsonSchema = _without_closed_objects(schema)
    return result


def _without_closed_objects(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _without_closed_objects(value)
            for key, value in node.items()
            if not (key == "additionalProperties" and value is False)
        }
    if isinstance(node, list):
        return [_without_closed_objects(item) for item in node]
    return node


def resolve(schema: JsonSchema, defs: JsonSchema) -> JsonSchema:
    """``schema``, or the definition in ``defs`` its ``$ref`` points to."""
    seen = set()
    while "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        if name in seen or name not in defs:
            break
        seen.add(name)
        schema = defs[name]
    return schema


def describe(schema: JsonSchema, defs: JsonSchema) -> str:
    """A short human description of a field's JSON schema: ``string (date-time)``, ``X or null``."""
    if "$ref" in schema:
        target = resolve(schema, defs)
        return f"object `{target.get('title', 'object')}`" if "properties" in target else describe(target, defs)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " or ".join(describe(option, defs) for option in schema[combinator])
    kind = schema.get("type")
    if "const" in schema:
        text = f"`{_json(schema['const'])}`"
    elif "enum" in schema:
        text = "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    elif kind == "array":
        items = schema.get("items")
        text = f"array of {describe(items, defs)}" if isinstance(items, dict) and items else "array"
    elif kind == "object":
        values = schema.get("additionalProperties")
        if "properties" in schema:
            text = f"object `{schema.get('title', 'object')}`"
        elif isinstance(values, dict) and values:
            text = f"object of string to {describe(values, defs)}"
        else:
            text = "object"
    elif kind is None:
        text = "any JSON value"
    else:
        text = _scalar(schema)
    return text


def _scalar(schema: JsonSchema) -> str:
    notes: list[str] = []
    if "format" in schema:
        notes.append(_FORMATS.get(str(schema["format"]), str(schema["format"])))
    if "minLength" in schema or "maxLength" in schema:
        notes.append(_range(schema.get("minLength"), schema.get("maxLength"), "characters"))
    if "minimum" in schema or "maximum" in schema:
        notes.append(_range(schema.get("minimum"), schema.get("maximum"), ""))
    if "pattern" in schema:
        notes.append(f"pattern `{schema['pattern']}`")
    kind = str(schema["type"])
    return f"{kind} ({', '.join(notes)})" if notes else kind


_FORMATS: Final[dict[str, str]] = {"date-time": "date-time, ISO 8601", "email": "email"}


def _range(low: object, high: object, unit: str) -> str:
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{low} to {high}{suffix}"
    if low is not None:
        return f"at least {low}{suffix}"
    return f"at most {high}{suffix}"


def _json(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
