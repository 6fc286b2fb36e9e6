"""Compare the contracts with their committed snapshot: which changes break whom.

A change is compatible when every message valid under the snapshot is still valid now
and nothing a reader relies on went away: a new optional field, a new event type, a new
command, a new enum value, a field that became optional. Anything else is incompatible:
a field removed, a field's type changed, a new required field, a field that became
required, an event type, command or reply removed, an event's version or stream changed
in place. Events are durable (streams, outboxes, replays), so an incompatible change to
one is made as a new versioned event type published beside the old one.

The input is what :func:`schemas.catalog.contracts` returns (and the snapshot holds).
"""

from dataclasses import dataclass
from typing import Any, Final

from schemas.catalog import JsonSchema, describe, resolve

REFRESH: Final = "uv run just contracts"
ACCEPT_BREAKING: Final = "uv run just contracts --accept-breaking"

_ANNOTATIONS: Final = frozenset({"title", "description", "examples", "default", "deprecated"})


@dataclass(frozen=True)
class Change:
    """One difference between the snapshot and the current contracts."""

    breaking: bool
    contract: str
    """What changed: ``event UserUpdated``, ``command auth.login (LogIn)``, ``reply TokenPair``."""
    field: str | None
    """The field, dotted for nested objects (``user.email``); None for the whole contract."""
    detail: str
    advice: str = ""

    def __str__(self) -> str:
        where = f"{self.contract}, field `{self.field}`" if self.field else self.contract
        text = f"{'INCOMPATIBLE' if self.breaking else 'compatible'}: {where}: {self.detail}"
        return f"{text}. {self.advice}" if self.advice else text


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every change from ``old`` (the snapshot) to ``new`` (the current contracts), breaking first."""
    changes: list[Change] = []
    _compare_events(old.get("events", {}), new.get("events", {}), changes)
    _compare_commands(old.get("commands", {}), new.get("commands", {}), changes)
    _compare_replies(old.get("replies", {}), new.get("replies", {}), changes)
    return sorted(changes, key=lambda change: (not change.breaking, change.contract, change.field or ""))


def breaking(changes: list[Change]) -> list[Change]:
    """The incompatible ones."""
    return [change for change in changes if change.breaking]


def _event_advice(name: str, version: int) -> str:
    return (
        f"Do it as a new event type instead: keep `{name}` (version {version}) exactly as it is, add "
        f"`{name}V{version + 1}` with version {version + 1} and the new shape, publish both until every "
        f"consumer reads the new one, then retire the old one with `{ACCEPT_BREAKING}`"
    )


def _compare_events(old: dict[str, Any], new: dict[str, Any], changes: list[Change]) -> None:
    for name, before in old.items():
        contract = f"event {name}"
        after = new.get(name)
        if after is None:
            changes.append(
                Change(
                    True,
                    contract,
                    None,
                    "the event type was removed",
                    "Consumers and the event log still hold it: keep it declared (it may stop being published); "
                    f"removing it for good takes `{ACCEPT_BREAKING}`",
                )
            )
            continue
        advice = _event_advice(name, int(before["version"]))
        if after["version"] != before["version"]:
            changes.append(
                Change(
                    True,
                    contract,
                    None,
                    f"the version changed from {before['version']} to {after['version']} without a new type",
                    advice,
                )
            )
        if after["stream"] != before["stream"]:
            changes.append(
                Change(
                    True,
                    contract,
                    None,
                    f"it moved from stream {before['stream']} to {after['stream']}; its consumers read the old one",
                    advice,
                )
            )
        _compare_schemas(before["schema"], after["schema"], contract, advice, changes)
    changes.extend(Change(False, f"event {name}", None, "new event type") for name in new.keys() - old.keys())


def _compare_commands(old: dict[str, Any], new: dict[str, Any], changes: list[Change]) -> None:
    for stream, before in old.items():
        contract = f"command {stream} ({before['type']})"
        after = new.get(stream)
        advice = (
            f"Add a new command on a new stream (e.g. `{stream}_v2`) with the new shape and keep `{stream}` "
            "until every sender has moved"
        )
        if after is None:
            changes.append(
                Change(
                    True,
                    contract,
                    None,
                    "the command was removed; its senders get no answer",
                    f"Keep it until no sender uses it; removing it takes `{ACCEPT_BREAKING}`",
                )
            )
            continue
        for key, what in (("type", "command type"), ("reply", "reply type")):
            if after[key] != before[key]:
                changes.append(
                    Change(True, contract, None, f"the {what} changed from {before[key]} to {after[key]}", advice)
                )
        _compare_schemas(before["schema"], after["schema"], contract, advice, changes)
    changes.extend(
        Change(False, f"command {stream} ({new[stream]['type']})", None, "new command") for stream in new.keys() - old
    )


def _compare_replies(old: dict[str, Any], new: dict[str, Any], changes: list[Change]) -> None:
    for name, before in old.items():
        contract = f"reply {name}"
        after = new.get(name)
        if after is None:
            changes.append(
                Change(
                    True,
                    contract,
                    None,
                    "the reply type was removed",
                    f"Requesters still expect it: keep it until none does, or record it with `{ACCEPT_BREAKING}`",
                )
            )
            continue
        advice = (
            "Return a new reply type from a new command instead, and keep this one for the requesters that expect it"
        )
        _compare_schemas(before["schema"], after["schema"], contract, advice, changes)
    changes.extend(Change(False, f"reply {name}", None, "new reply type") for name in new.keys() - old.keys())


def _compare_schemas(old: JsonSchema, new: JsonSchema, contract: str, advice: str, changes: list[Change]) -> None:
    _Schemas(old.get("$defs", {}), new.get("$defs", {}), contract, advice, changes).objects(old, new, "")


@dataclass
class _Schemas:
    """Walks two versions of one contract's schema side by side."""

    old_defs: JsonSchema
    new_defs: JsonSchema
    contract: str
    advice: str
    changes: list[Change]

    def add(self, breaking: bool, field: str, detail: str) -> None:
        self.changes.append(Change(breaking, self.contract, field or None, detail, self.advice if breaking else ""))

    def objects(self, old: JsonSchema, new: JsonSchema, path: str) -> None:
        old_fields: dict[str, JsonSchema] = old.get("properties", {})
        new_fields: dict[str, JsonSchema] = new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name, before in old_fields.items():
            field = f"{path}{name}"
            if name not in new_fields:
                self.add(True, field, "the field was removed")
                continue
            if name in new_required and name not in old_required:
                self.add(True, field, "the field became required; earlier messages may lack it")
            elif name in old_required and name not in new_required:
                self.add(False, field, "the field became optional")
            self.values(before, new_fields[name], field)
        for name in new_fields.keys() - old_fields.keys():
            if name in new_required:
                self.add(True, f"{path}{name}", "a new required field; earlier messages lack it")
            else:
                self.add(False, f"{path}{name}", "a new optional field")

    def values(self, old: JsonSchema, new: JsonSchema, field: str) -> None:
        old, new = resolve(old, self.old_defs), resolve(new, self.new_defs)
        if self.plain(old, self.old_defs) == self.plain(new, self.new_defs):
            return
        if "properties" in old and "properties" in new:
            self.objects(old, new, f"{field}.")
            return
        if "enum" in old and "enum" in new and _without(old, "enum") == _without(new, "enum"):
            removed = [value for value in old["enum"] if value not in new["enum"]]
            added = [value for value in new["enum"] if value not in old["enum"]]
            if removed:
                self.add(True, field, f"values removed: {', '.join(map(str, removed))}")
            if added:
                self.add(False, field, f"values added: {', '.join(map(str, added))}")
            return
        for combinator in ("anyOf", "oneOf"):
            if (
                combinator in old
                and combinator in new
                and len(old[combinator]) == len(new[combinator])
                and _without(old, combinator) == _without(new, combinator)
            ):
                for before, after in zip(old[combinator], new[combinator], strict=True):
                    self.values(before, after, field)
                return
        if old.get("type") == new.get("type") == "array" and _without(old, "items") == _without(new, "items"):
            self.values(old.get("items", {}), new.get("items", {}), f"{field}[]")
            return
        self.add(
            True,
            field,
            f"the type changed from {describe(old, self.old_defs)} to {describe(new, self.new_defs)}",
        )

    def plain(self, schema: Any, defs: JsonSchema, seen: frozenset[str] = frozenset()) -> Any:
        """``schema`` with references inlined and annotations dropped: what validation depends on."""
        if isinstance(schema, list):
            return [self.plain(item, defs, seen) for item in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            if name in seen:
                return {"$ref": name}
            return self.plain(resolve(schema, defs), defs, seen | {name})
        plain: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _ANNOTATIONS:
                continue
            if key == "properties":  # field names, not keywords: a field may be called "title"
                plain[key] = {name: self.plain(field, defs, seen) for name, field in value.items()}
            else:
                plain[key] = self.plain(value, defs, seen)
        return plain


def _without(schema: JsonSchema, key: str) -> JsonSchema:
    return {k: v for k, v in schema.items() if k != key and k not in _ANNOTATIONS}
