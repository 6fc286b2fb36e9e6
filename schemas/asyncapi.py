"""The AsyncAPI 3.0 document of the whole bus, built from the contracts in schemas/.

Channels: every command stream, every event stream, the reply inboxes, and the
dead-letter stream of every event stream. A message's ``payload`` is the JSON object a
stream entry holds in its ``__data__`` field (or a reply carries): the envelope, whose
``payload`` key holds the contract's fields. See docs/events.md.

``uv run just asyncapi`` writes it to docs/asyncapi.json; the gateway serves it at
``GET /asyncapi.json``.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from pydantic.json_schema import models_json_schema

from schemas import streams
from schemas.base import Contract
from schemas.catalog import (
    CatalogError,
    JsonSchema,
    commands,
    consumer_of,
    doc,
    events,
    producer_of,
    replies,
    tolerant,
)
from schemas.envelope import (
    CAUSATION_ID,
    CORRELATION_ID,
    DATA_FIELD,
    DEAD_LETTER_FIELDS,
    DEADLINE,
    ERROR_TYPE,
    HEADERS,
    MESSAGE_ID,
    OCCURRED_AT,
    PRODUCER,
    REPLY_KEY,
    REPLY_TO,
    SCHEMA_VERSION,
    TYPE,
    Envelope,
)

ASYNCAPI_VERSION: Final = "3.0.0"
COMPONENTS: Final = "#/components/schemas/"
INBOX: Final = "inbox"
"""The key of the reply inboxes' channel."""


def _package_version() -> str:
    try:
        return version("busway")
    except PackageNotFoundError:
        return "0.0.0"


def _field_description(name: str) -> str:
    return Envelope.model_fields[name].description or ""


def _envelope(
    type_name: str, payload: JsonSchema, *, version: int | None = None, producer: str | None = None, kind: str
) -> JsonSchema:
    """The JSON object one message is on the wire, with ``payload`` as given."""
    properties: dict[str, JsonSchema] = {
        MESSAGE_ID: {"type": "string", "description": _field_description(MESSAGE_ID)},
        TYPE: {"const": type_name, "description": _field_description(TYPE)},
    }
    required = [MESSAGE_ID, TYPE, OCCURRED_AT, CORRELATION_ID, PRODUCER, "payload"]
    if version is not None:
        properties[SCHEMA_VERSION] = {"const": version, "description": _field_description(SCHEMA_VERSION)}
        required.insert(2, SCHEMA_VERSION)
    properties[OCCURRED_AT] = {
        "type": "string",
        "format": "date-time",
        "description": _field_description(OCCURRED_AT),
    }
    properties[CORRELATION_ID] = {"type": "string", "description": _field_description(CORRELATION_ID)}
    properties[CAUSATION_ID] = {"type": "string", "description": _field_description(CAUSATION_ID)}
    properties[PRODUCER] = (
        {"const": producer, "description": _field_description(PRODUCER)}
        if producer
        else {"type": "string", "description": _field_description(PRODUCER)}
    )
    headers: JsonSchema = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": _field_description("headers"),
    }
    known = {"command": (REPLY_TO, DEADLINE), "reply": (REPLY_KEY,)}.get(kind, ())
    if known:
        headers["properties"] = {name: {"type": "string", "description": HEADERS[name]} for name in known}
    if kind == "command":
        headers["required"] = [REPLY_TO]
        required.append("headers")
    properties["headers"] = headers
    properties["payload"] = payload
    return {"type": "object", "required": required, "properties": properties}


def _message(name: str, model: type[Contract], envelope: JsonSchema, summary: str) -> JsonSchema:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "description": doc(model),
        "contentType": "application/json",
        "payload": envelope,
        "correlationId": {"$ref": "#/components/correlationIds/correlation"},
    }


def _unique(messages: dict[str, JsonSchema], name: str) -> None:
    if name in messages:
        msg = f"two contracts on the bus are both called {name!r}: rename one (messages are told apart by type)"
        raise CatalogError(msg)


def _ref(model: type[Contract]) -> JsonSchema:
    return {"$ref": f"{COMPONENTS}{model.__name__}"}


def _schemas(models: list[type[Contract]], event_models: set[type[Contract]]) -> dict[str, JsonSchema]:
    """Every model's JSON schema under components/schemas, nested types hoisted beside them."""
    _, top = models_json_schema([(model, "validation") for model in models], ref_template=COMPONENTS + "{model}")
    found: dict[str, JsonSchema] = top.get("$defs", {})
    for model in event_models:
        # Readers ignore unknown fields: producers may add optional ones to an event.
        found[model.__name__] = tolerant(found[model.__name__])
    return dict(sorted(found.items()))


def _parameters() -> dict[str, JsonSchema]:
    return {
        "prefix": {
            "description": "`BUS_PREFIX`: put in front of every stream and channel name (empty by default).",
            "default": "",
            "examples": ["", "staging:"],
        },
        "instance": {
            "description": "The requesting process's name, unique per process (`<service>-<host>-<pid>`).",
            "examples": ["gateway-web1-4242"],
        },
    }


def _redis(kind: str, **more: str) -> dict[str, str]:
    """How a channel is kept in Redis (AsyncAPI's Redis bindings define no fields yet)."""
    where = {
        "stream": f"one field, `{DATA_FIELD}`, holding the message (the JSON envelope)",
        "pubsub": "the message (the JSON envelope) is the Pub/Sub payload",
    }
    return {"type": kind, "entry": where[kind], **more}


def _channel_messages(names: list[str]) -> dict[str, JsonSchema]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def asyncapi_document() -> dict[str, Any]:
    """The whole bus as an AsyncAPI 3.0 document (a JSON-ready dict)."""
    event_catalog, command_catalog, reply_catalog = events(), commands(), replies()
    event_models: set[type[Contract]] = {model for model, _, _ in event_catalog.values()}
    models: list[type[Contract]] = [
        *(model for model, _, _ in event_catalog.values()),
        *(route.command for route in command_catalog.values()),
        *reply_catalog.values(),
    ]
    messages: dict[str, JsonSchema] = {}
    channels: dict[str, JsonSchema] = {}
    operations: dict[str, JsonSchema] = {}
    prefix = {"prefix": {"$ref": "#/components/parameters/prefix"}}

    for name, model in reply_catalog.items():
        _unique(messages, name)
        messages[name] = _message(name, model, _envelope(name, _ref(model), kind="reply"), f"Reply: {name}")
    channels[INBOX] = {
        "address": f"{{prefix}}{streams.INBOX_PREFIX}{{instance}}",
        "title": "Reply inboxes",
        "description": (
            "One Redis Pub/Sub channel per requesting process, named by a command's `headers.reply_to`. "
            "Replies are not durable: Pub/Sub delivers only to current subscribers."
        ),
        "parameters": {**prefix, "instance": {"$ref": "#/components/parameters/instance"}},
        "messages": _channel_messages(list(reply_catalog)),
        "x-redis": _redis("pubsub"),
    }

    for stream, route in command_catalog.items():
        name = route.command.__name__
        service = consumer_of(stream)
        _unique(messages, name)
        messages[name] = _message(
            name, route.command, _envelope(name, _ref(route.command), kind="command"), f"Command to {service}: {name}"
        )
        channels[stream] = {
            "address": f"{{prefix}}{stream}",
            "title": f"Command stream {stream}",
            "description": f"`{name}` commands, handled by the `{service}` service (consumer group `{service}`).",
            "parameters": prefix,
            "messages": _channel_messages([name]),
            "x-redis": _redis("stream", group=service),
        }
        answers = [route.reply.__name__, ERROR_TYPE]
        operations[stream] = {
            "action": "receive",
            "title": f"{service} handles {name}",
            "channel": {"$ref": f"#/channels/{stream}"},
            "messages": [{"$ref": f"#/channels/{stream}/messages/{name}"}],
            "reply": {
                "address": {
                    "description": "The requester's inbox, named in the command.",
                    "location": f"$message.payload#/headers/{REPLY_TO}",
                },
                "channel": {"$ref": f"#/channels/{INBOX}"},
                "messages": [{"$ref": f"#/channels/{INBOX}/messages/{answer}"} for answer in answers],
            },
        }

    by_stream: dict[str, list[str]] = {}
    for name, (model, schema_version, stream) in event_catalog.items():
        producer = producer_of(stream)
        by_stream.setdefault(stream, []).append(name)
        _unique(messages, name)
        messages[name] = _message(
            name,
            model,
            _envelope(name, _ref(model), version=schema_version, producer=producer, kind="event"),
            f"Event from {producer}: {name} (version {schema_version})",
        )
    for stream, names in by_stream.items():
        producer = producer_of(stream)
        channels[stream] = {
            "address": f"{{prefix}}{stream}",
            "title": f"Event stream {stream}",
            "description": (
                f"Events produced by `{producer}`, in commit order. Read it with a consumer group of your own "
                "(one per consuming service); skip types and versions you do not know."
            ),
            "parameters": prefix,
            "messages": _channel_messages(names),
            "x-redis": _redis("stream"),
        }
        operations[f"{producer}.publishes.{stream}"] = {
            "action": "send",
            "title": f"{producer} publishes its events",
            "channel": {"$ref": f"#/channels/{stream}"},
            "messages": [{"$ref": f"#/channels/{stream}/messages/{name}"} for name in names],
        }
        dead = streams.dead_letters(stream)
        channels[dead] = {
            "address": f"{{prefix}}{dead}",
            "title": f"Dead letters of {stream}",
            "description": (
                f"Entries of `{stream}` that a consumer group failed to handle `BUS_MAX_DELIVERIES` times, moved "
                f"here and acknowledged on `{stream}`. Unlike other streams, an entry has several fields."
            ),
            "parameters": prefix,
            "messages": _channel_messages(["DeadLetter"]),
            "x-redis": _redis("stream", entry="fields as in the DeadLetter message; all values are strings"),
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "An entry that kept failing, with why",
        "description": "The fields of one dead-letter stream entry (a Redis stream entry, not a JSON envelope).",
        "payload": {
            "type": "object",
            "required": list(DEAD_LETTER_FIELDS),
            "properties": {name: {"type": "string", "description": text} for name, text in DEAD_LETTER_FIELDS.items()},
        },
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "busway message bus",
            "version": _package_version(),
            "description": (
                "Commands, replies and domain events of busway on Redis streams and Pub/Sub. Every stream entry has "
                f"one field, `{DATA_FIELD}`, holding a JSON object: the envelope (id, type, version, occurred_at, "
                "correlation_id, causation_id, producer, headers) with the contract's fields under `payload`. "
                "Human-readable reference: docs/events.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "localhost:6379",
                "protocol": "redis",
                "description": "The Redis of `REDIS_URL` (default redis://localhost:6379).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(models, event_models),
            "messages": messages,
            "parameters": _parameters(),
            "correlationIds": {
                "correlation": {
                    "description": "The correlation id of the whole piece of work (an HTTP request's X-Request-ID).",
                    "location": f"$message.payload#/{CORRELATION_ID}",
                }
            },
        },
    }
