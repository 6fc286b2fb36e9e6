"""docs/events.md: the bus contracts for people, rendered from schemas/.

Every table and schema in it is read from the contracts (``COMMANDS``, ``EVENT_TYPES``,
``EVENT_STREAMS``, the envelope); the example subscriber is included verbatim from its
file, which a test runs. ``uv run just contracts`` writes it.
"""

import json
from typing import Any, Final

from schemas import streams
from schemas.base import Contract
from schemas.catalog import (
    JsonSchema,
    commands,
    consumer_of,
    describe,
    doc,
    events,
    json_schema,
    producer_of,
    replies,
    tolerant,
)
from schemas.compatibility import ACCEPT_BREAKING, REFRESH
from schemas.envelope import DATA_FIELD, DEAD_LETTER_FIELDS, ERROR_TYPE, HEADERS, Envelope
from schemas.events import RegistrationStarted

GENERATED: Final = (
    "<!-- Generated from schemas/ by `uv run just contracts`: do not edit by hand. "
    "Change the contracts (or the prose in schemas/markdown.py) and regenerate. -->"
)

_PRESENT: Final[dict[str, str]] = {
    "id": "always",
    "type": "always",
    "version": "events",
    "occurred_at": "always",
    "correlation_id": "always",
    "causation_id": "when caused by another message",
    "producer": "always",
    "headers": "when not empty",
    "payload": "always",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _first_line(model: type[Contract]) -> str:
    return doc(model).split(". ", 1)[0].rstrip(".") + "." if model.__doc__ else ""


def _fields_table(schema: JsonSchema) -> list[str]:
    """A table of the fields of one object schema, and of the object types nested in it."""
    defs: JsonSchema = schema.get("$defs", {})
    lines = _object_table(schema, defs)
    for name, nested in defs.items():
        if "properties" in nested:
            lines += ["", f"`{name}`: {_cell(str(nested.get('description', '')))}", "", *_object_table(nested, defs)]
    return lines


def _object_table(schema: JsonSchema, defs: JsonSchema) -> list[str]:
    properties: dict[str, JsonSchema] = schema.get("properties", {})
    if not properties:
        return ["No fields: the payload is `{}`."]
    required = set(schema.get("required", ()))
    lines = ["| field | type | required |", "|---|---|---|"]
    for name, field in properties.items():
        kind = describe(field, defs)
        if field.get("description"):
            kind = f"{kind}: {field['description']}"
        lines.append(f"| `{name}` | {_cell(kind)} | {'yes' if name in required else 'no'} |")
    return lines


def _json_block(value: Any, summary: str) -> list[str]:
    return [
        "<details>",
        f"<summary>{summary}</summary>",
        "",
        "```json",
        json.dumps(value, indent=2, ensure_ascii=False),
        "```",
        "",
        "</details>",
    ]


def _example_event() -> dict[str, Any]:
    payload = RegistrationStarted(
        registration_id="d930835b078243238687a77be90991e3",
        user_id="9a5784d01ffa4dfb9d181be0ad3244f1",
        email="ann@example.com",
        display_name="Ann",
    )
    return {
        "id": "e39fe63917454cc68a87b44c9290516c",
        "type": "RegistrationStarted",
        "version": events()["RegistrationStarted"][1],
        "occurred_at": "2026-11-25T18:26:52.520912+00:00",
        "correlation_id": "ca40afc6863d470e97dbb42a267f9530",
        "causation_id": "92ae3813a9ac4eea876ade51fadd0bc3",
        "producer": producer_of(events()["RegistrationStarted"][2]),
        "payload": payload.model_dump(mode="json"),
    }


def _envelope_schema() -> JsonSchema:
    """The envelope as a reader should accept it (unknown keys ignored)."""
    return tolerant(Envelope.model_json_schema(mode="validation"))


def _streams_section() -> list[str]:
    catalog, routes = events(), commands()
    event_streams = list(dict.fromkeys(stream for _, _, stream in catalog.values()))
    lines = [
        "## Streams and channels",
        "",
        "Every name below is put after `BUS_PREFIX` (empty by default): with `BUS_PREFIX=staging:` the auth "
        "events are in `staging:events.auth`.",
        "",
        "| name | Redis type | carries | written by | read by (consumer group) |",
        "|---|---|---|---|---|",
    ]
    for stream in event_streams:
        names = ", ".join(f"`{name}`" for name, (_, _, s) in catalog.items() if s == stream)
        lines.append(f"| `{stream}` | stream | events: {names} | {producer_of(stream)} | any service, its own group |")
    for stream in event_streams:
        lines.append(
            f"| `{streams.dead_letters(stream)}` | stream | entries of `{stream}` that kept failing "
            "([dead letters](#dead-letters)) | the consumer group that gave up | operators |"
        )
    for stream, route in routes.items():
        service = consumer_of(stream)
        lines.append(
            f"| `{stream}` | stream | command `{route.command.__name__}`, reply `{route.reply.__name__}` | "
            f"requesters (the gateway) | {service} (`{service}`) |"
        )
    lines.append(
        f"| `{streams.INBOX_PREFIX}<instance>` | Pub/Sub channel | replies to the commands a process sent, "
        "named by the command's `headers.reply_to` | the handler | the requesting process |"
    )
    return lines


def _wire_section() -> list[str]:
    example = _example_event()
    compact = json.dumps(example, separators=(",", ":"))
    envelope_rows = [
        f"| `{name}` | {_PRESENT.get(name, '')} | {_cell(field.description or '')} |"
        for name, field in Envelope.model_fields.items()
    ]
    header_rows = [f"| `{name}` | {_cell(text)} |" for name, text in HEADERS.items()]
    return [
        "## The wire format",
        "",
        f"A **stream entry** has exactly one field, `{DATA_FIELD}`, whose value is one JSON object (UTF-8): the "
        "**envelope**. A **Pub/Sub reply** is the same JSON object as the message body, with no field around it. "
        "Any Redis client shows it as it is:",
        "",
        "```console",
        "$ redis-cli XRANGE events.auth - + COUNT 1",
        '1) 1) "1764095212520-0"',
        f'   2) 1) "{DATA_FIELD}"',
        "      2) " + json.dumps(compact),
        "```",
        "",
        "The same object, indented:",
        "",
        "```json",
        json.dumps(example, indent=2),
        "```",
        "",
        "The envelope's keys (`schemas/envelope.py`):",
        "",
        "| key | present | meaning |",
        "|---|---|---|",
        *envelope_rows,
        "",
        "The keys busway puts in `headers`; others may appear and are passed through:",
        "",
        "| header | meaning |",
        "|---|---|",
        *header_rows,
        "",
        "Ignore envelope keys you do not know: new ones may be added.",
        "",
        *_json_block(_envelope_schema(), "JSON schema of the envelope"),
    ]


def _events_section() -> list[str]:
    catalog = events()
    lines = [
        "## Event types",
        "",
        "A consumer dispatches on the pair (`type`, `version`). The `payload` schemas below are as a reader should "
        "apply them: fields not listed may appear later (see [versioning](#versioning)) and must be ignored.",
        "",
        "| type | version | stream | what happened |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| [`{name}`](#{name.lower()}) | {version} | `{stream}` | {_cell(_first_line(model))} |"
        for name, (model, version, stream) in catalog.items()
    ]
    for name, (model, version, stream) in catalog.items():
        schema = tolerant(json_schema(model))
        lines += [
            "",
            f"### {name}",
            "",
            f"Version **{version}**, on `{stream}` (producer `{producer_of(stream)}`). {doc(model)}",
            "",
            *_fields_table(schema),
            "",
            *_json_block(schema, f"JSON schema of the <code>{name}</code> v{version} payload"),
        ]
    return lines


_GUARANTEES: Final = f"""## Delivery and ordering

- **At-least-once.** A service writes each event to its outbox table in the same
  transaction as the change it describes; a relay appends it to the stream. A crash
  between the append and the relay's bookkeeping appends the same event again, with the
  same `id`. Deduplicate on `id`: keep an **inbox** (the ids you handled, written in the
  same transaction as the effect; busway's services keep an `inbox` table) and skip an id
  you have seen. A duplicate may arrive long after the first copy.
- **Ordered per stream.** A producer's events are appended in commit order, so the events
  of one user (one aggregate) appear in `events.<producer>` in the order they happened.
  There is no order across streams: `UserCreated` (on `events.users`) may be read before
  or after the `RegistrationStarted` (on `events.auth`) that caused it; follow
  `causation_id` when the order matters.
- **Consumer groups.** Read with `XREADGROUP` in a group named after your service; every
  process of your service uses the same group and its own consumer name
  (`<service>-<host>-<pid>`). Members of a group share its entries, each delivered to one
  of them; every group gets every entry. Never use busway's groups (`users`, `auth`, ...):
  you would take events away from them. Several consumers in one group handle entries in
  parallel and may finish them out of order; use one consumer where order matters.
- **Start at the beginning.** Create your group at `0` (`XGROUP CREATE <stream> <group> 0
  MKSTREAM`), not `$`, so events appended before your first start reach you too.
- **Acknowledge after the work.** `XACK` an entry once its effect is committed. An entry
  you read and did not acknowledge stays in the group's pending list: read your own
  pending entries again (id `0` instead of `>`) when you start, and take over the entries
  of a consumer that died with `XAUTOCLAIM` after an idle time. busway's own consumers
  do so after `BUS_CLAIM_IDLE_MS` (15 s), and move an event delivered more than
  `BUS_MAX_DELIVERIES` (5) times to `dlq.<stream>` ([dead letters](#dead-letters)).
- **Skip what you do not know.** Look up the pair (`type`, `version`) and acknowledge
  and skip anything else: new event types appear without notice, and a new version of a
  type is a new contract you have not read yet. Ignore payload fields and envelope keys
  you do not know. Treat an enum value you do not know (a new error `reason`) as "other".
- **Nothing is trimmed.** busway does not trim event streams; their history is there to
  read or replay. (The command streams `auth.register` and `auth.login` carry passwords:
  each entry is deleted as soon as it is handled.)
- **Replies are not durable.** Pub/Sub delivers a reply only to a process subscribed at
  that moment.

## Versioning

The pair (`type`, `version`) names one payload schema, and that schema only ever changes
compatibly: every message valid before stays valid, and nothing a reader uses goes away.

- **Compatible** (made freely): a new event type, a new command, a new optional field, a
  field that becomes optional, a new enum value (deploy the consumers of that field
  first: busway's own services refuse a value they do not know).
- **Incompatible** (never made in place): removing a field, changing a field's type,
  adding a required field, making a field required, removing an event type, command or
  reply, changing an event's version or stream. Instead, add a new event type: keep
  `UserUpdated` (version 1) as it is, add `UserUpdatedV2` (version 2) with the new shape,
  publish both until every consumer reads the new one, then retire the old one.

`schemas/contracts.snapshot.json` records every command, reply and event schema. A test
compares the code with it: an incompatible change fails, naming the type and field; a
compatible one asks for `{REFRESH}`, which rewrites the snapshot, this page and
`docs/asyncapi.json`, and refuses an incompatible change unless given `--accept-breaking`
(`{ACCEPT_BREAKING}`, for a deliberate retirement).
"""


def _subscriber_section(source: str, path: str) -> list[str]:
    return [
        "## A complete subscriber in plain Python",
        "",
        f"`{path}` reads the event streams with redis-py alone: no busway code, only this page. It creates "
        "its group at `0`, first finishes its own pending entries, takes over entries a dead consumer left, "
        "deduplicates on `id`, dispatches on (`type`, `version`), skips everything else, and acknowledges after the "
        "work. A test runs it against the real system.",
        "",
        "```sh",
        f"REDIS_URL=redis://localhost:6379 python {path} --group my-mailer          # runs until Ctrl-C",
        f"python {path} --group my-mailer --drain                                    # handles what is there, exits",
        "```",
        "",
        "```python",
        source.rstrip("\n"),
        "```",
        "",
        "The same by hand with `redis-cli`:",
        "",
        "```sh",
        "redis-cli XGROUP CREATE events.auth my-mailer 0 MKSTREAM",
        "redis-cli XREADGROUP GROUP my-mailer my-mailer-1 COUNT 10 STREAMS events.auth '>'",
        "redis-cli XACK events.auth my-mailer <entry id>",
        "```",
    ]


def _commands_section() -> list[str]:
    routes, reply_models = commands(), replies()
    lines = [
        "## Commands",
        "",
        "Commands are contracts too. A command is an envelope (as above, without `version`) appended to its "
        "stream with `headers.reply_to` naming the sender's Pub/Sub inbox; the handler publishes the reply "
        "there, with `causation_id` = the command's `id`. A command whose `headers.deadline` has passed is answered "
        "`expired` instead of executed. Payloads are validated strictly: unknown fields are refused. "
        "[docs/wire-format.md](wire-format.md#sending-a-command-from-outside) shows a command sent from outside.",
        "",
        "| stream | command | reply | handled by |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{stream}` | [`{route.command.__name__}`](#{route.command.__name__.lower()}) | "
        f"[`{route.reply.__name__}`](#{route.reply.__name__.lower()}) or `{ERROR_TYPE}` | {consumer_of(stream)} |"
        for stream, route in routes.items()
    ]
    for stream, route in routes.items():
        lines += [
            "",
            f"### {route.command.__name__}",
            "",
            f"On `{stream}`, handled by `{consumer_of(stream)}`; the reply is `{route.reply.__name__}`. "
            f"{doc(route.command)}",
            "",
            *_fields_table(json_schema(route.command)),
        ]
    lines += ["", "## Replies", ""]
    for name, model in reply_models.items():
        if name == ERROR_TYPE:
            continue
        lines += [f"### {name}", "", doc(model), "", *_fields_table(json_schema(model)), ""]
    error = reply_models[ERROR_TYPE]
    lines += [
        "### busway.Error",
        "",
        f"Any command may be answered with `type` `{ERROR_TYPE}` instead of its result. {doc(error)}",
        "",
        *_fields_table(json_schema(error)),
    ]
    return lines


def _dead_letters_section() -> list[str]:
    return [
        "## Dead letters",
        "",
        "An event that a consumer group failed to handle `BUS_MAX_DELIVERIES` times is appended to "
        "`dlq.<stream>` and acknowledged on its stream, so the events after it flow. Unlike other entries, a "
        "dead-letter entry has several fields, all strings:",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{name}` | {_cell(text)} |" for name, text in DEAD_LETTER_FIELDS.items()),
    ]


def render(subscriber_source: str, subscriber_path: str) -> str:
    """docs/events.md, with the example subscriber ``subscriber_source`` (from ``subscriber_path``) included."""
    sections = [
        [
            "# Events and commands: the contracts of the bus",
            "",
            GENERATED,
            "",
            "Everything busway puts on Redis, for programs in any language that read its events or send it "
            "commands. The same in machine-readable form: the AsyncAPI 3.0 document "
            "[docs/asyncapi.json](asyncapi.json), served by the gateway at `GET /asyncapi.json`.",
            "",
            "- [Streams and channels](#streams-and-channels)",
            "- [The wire format](#the-wire-format)",
            "- [Event types](#event-types)",
            "- [Delivery and ordering](#delivery-and-ordering)",
            "- [Versioning](#versioning)",
            "- [A complete subscriber in plain Python](#a-complete-subscriber-in-plain-python)",
            "- [Commands](#commands) and [replies](#replies)",
            "- [Dead letters](#dead-letters)",
        ],
        _streams_section(),
        _wire_section(),
        _events_section(),
        _GUARANTEES.rstrip("\n").splitlines(),
        _subscriber_section(subscriber_source, subscriber_path),
        _commands_section(),
        _dead_letters_section(),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
