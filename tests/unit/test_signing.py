"""Message signatures: what they cover, key rotation, and the keys production refuses."""

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from bus import wire
from bus.broker import Consumer, producer_of_events
from bus.process import settings_error
from bus.settings import BusSettings
from bus.signing import SIGNED_FIELDS, Signer, Verifier, development_key, wire_payload
from gateway.settings import GatewaySettings
from handlers.mailer.settings import MailerSettings
from handlers.users.settings import UsersSettings

KEY = "k" * 40
HEADERS: dict[str, Any] = {
    "id": "m1",
    "type": "GetUser",
    "occurred_at": "2026-11-25T18:27:01+00:00",
    "correlation_id": "c1",
    "producer": "gateway",
    "reply_to": "inbox.gw-1",
    "deadline": "1795631226103",
}
PAYLOAD = b'{"user_id":"u1"}'


def received(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """What a handler sees: the payload bytes and flat headers."""
    return wire.decode(data)


def check(verifier: Verifier, data: bytes) -> str | None:
    body, headers = received(data)
    return verifier.verify(headers, wire_payload(body, headers))


def test_a_signed_message_verifies_and_any_signed_field_changed_does_not() -> None:
    data = wire.encode(HEADERS, PAYLOAD, signer=Signer("gateway", KEY))
    verifier = Verifier({"gateway": [KEY]})
    assert check(verifier, data) is None
    for name in ("id", "type", "occurred_at", "correlation_id", "reply_to", "deadline"):
        changed = wire.encode({**HEADERS, name: "changed"}, PAYLOAD)
        _, headers = received(changed)
        headers["signature"] = received(data)[1]["signature"]
        body, _ = received(changed)
        assert verifier.verify(headers, body) == "bad signature", name
    assert check(verifier, data.replace(b'"u1"', b'"u2"')) == "bad signature"
    assert (
        check(verifier, data.replace(b'"gateway"', b'"users"'))
        == "no trusted key " + Signer("x", KEY).key_id + " of users"
    )
    assert set(SIGNED_FIELDS) >= {"id", "type", "version", "producer", "causation_id", "reply_to", "deadline"}


def test_unsigned_and_malformed_signatures_are_refused() -> None:
    verifier = Verifier({"gateway": [KEY]})
    assert check(verifier, wire.encode(HEADERS, PAYLOAD)) == "no signature"
    assert check(verifier, wire.encode({**HEADERS, "signature": "v0:x:y"}, PAYLOAD)) == "malformed signature"
    assert check(verifier, wire.encode({**HEADERS, "producer": None}, PAYLOAD, signer=Signer("g", KEY))) == (
        "no producer"
    )


def test_text_and_binary_payloads_are_signed_as_they_travel() -> None:
    verifier = Verifier({"gateway": [KEY]})
    for payload, content_type in ((b"hello", wire.TEXT), (bytes(range(256)), None)):
        data = wire.encode(HEADERS, payload, content_type, signer=Signer("gateway", KEY))
        body, _ = received(data)
        assert body == payload
        assert check(verifier, data) is None


def test_a_verifier_trusts_old_and_new_keys_while_a_key_rotates() -> None:
    old, new = "o" * 40, "n" * 40
    by_old = wire.encode(HEADERS, PAYLOAD, signer=Signer("gateway", old))
    by_new = wire.encode(HEADERS, PAYLOAD, signer=Signer("gateway", new))
    during = Verifier({"gateway": [new, old]})
    assert check(during, by_old) is None
    assert check(during, by_new) is None
    after = Verifier({"gateway": [new]})
    assert check(after, by_new) is None
    assert check(after, by_old) is not None


def test_development_keys_are_derived_outside_production_only() -> None:
    data = wire.encode(HEADERS, PAYLOAD, signer=Signer("gateway", development_key("gateway")))
    assert check(Verifier({}, development=True), data) is None
    assert (
        check(Verifier({}, development=False), data)
        == f"no trusted key {Signer('g', development_key('gateway')).key_id} of gateway"
    )
    assert BusSettings(_env_file=None).signer("gateway").key_id == Signer("g", development_key("gateway")).key_id


def test_a_replay_stream_allows_what_its_stream_allows() -> None:
    consumer = Consumer(BusSettings(prefix="p:", _env_file=None), "users", "users-1")
    consumer.allowed["p:events.auth"] = frozenset({"auth"})
    assert consumer.allowed_producers("p:replay.users.events.auth") == frozenset({"auth"})
    assert consumer.allowed_producers("p:events.users") is None
    assert producer_of_events("replay.users.events.auth") == producer_of_events("events.auth") == "auth"


def test_keys_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "own.key").write_text("s" * 40 + "\n")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "gateway.key").write_text("g" * 40)
    (trusted / "auth.2026.key").write_text("a" * 40)
    (trusted / "auth.2025.key").write_text("b" * 40)
    settings = BusSettings(signing_key_file=tmp_path / "own.key", trusted_keys_dir=trusted, _env_file=None)
    assert settings.signing_key is not None
    assert settings.signing_key.get_secret_value() == "s" * 40
    assert settings.trusted_keys == {"auth": ["b" * 40, "a" * 40], "gateway": ["g" * 40]}
    with pytest.raises(pydantic.ValidationError, match="BUS_TRUSTED_KEYS_DIR cannot be read"):
        BusSettings(trusted_keys_dir=tmp_path / "missing", _env_file=None)


def test_trusted_keys_take_one_key_or_a_list_per_service() -> None:
    settings = BusSettings(trusted_keys='{"gateway": "g", "auth": ["a", "b"]}', _env_file=None)  # type: ignore[arg-type]
    assert settings.trusted_keys == {"gateway": ["g"], "auth": ["a", "b"]}


PRODUCTION_KEYS: dict[str, Any] = {"signing_key": "s" * 40, "trusted_keys": {"gateway": ["g" * 40]}}


@pytest.mark.parametrize(
    ("bus", "says"),
    [
        ({}, "BUS_SIGNING_KEY (or BUS_SIGNING_KEY_FILE) must be set in production"),
        ({"signing_key": "s" * 40}, "BUS_TRUSTED_KEYS (or BUS_TRUSTED_KEYS_DIR) must be set in production"),
        ({**PRODUCTION_KEYS, "signing_key": development_key("users")}, "BUS_SIGNING_KEY is a development key"),
        ({**PRODUCTION_KEYS, "signing_key": "short"}, "BUS_SIGNING_KEY must be at least 32 characters"),
        (
            {**PRODUCTION_KEYS, "trusted_keys": {"auth": [development_key("auth")]}},
            "BUS_TRUSTED_KEYS holds a development key of auth",
        ),
    ],
)
def test_production_services_refuse_missing_or_development_bus_keys(bus: dict[str, Any], says: str) -> None:
    settings = BusSettings(_env_file=None, **bus)
    for make in (
        lambda: UsersSettings(environment="production", bus=settings, _env_file=None),
        lambda: GatewaySettings(environment="production", bus=settings, _env_file=None),
        lambda: MailerSettings(environment="production", bus=settings, _env_file=None),
    ):
        with pytest.raises(pydantic.ValidationError) as caught:
            make()
        assert says in settings_error(caught.value, "USERS_")
    assert UsersSettings(environment="development", bus=settings, _env_file=None).bus is settings


def test_production_refuses_the_development_database_passwords() -> None:
    bus = BusSettings(_env_file=None, **PRODUCTION_KEYS)
    url = "postgresql+asyncpg://users:users-dev-password@postgres:5432/users"
    for field in ("database_url", "database_read_url"):
        options: dict[str, Any] = {field: url}
        with pytest.raises(pydantic.ValidationError) as caught:
            UsersSettings(environment="production", bus=bus, _env_file=None, **options)
        assert f"USERS_{field.upper()} uses a development password" in settings_error(caught.value, "USERS_")
    secret = "postgresql+asyncpg://users:s3cret-long-password@postgres:5432/users"
    assert UsersSettings(environment="production", bus=bus, database_url=secret, _env_file=None)


def test_a_service_started_in_production_with_development_keys_says_which_and_exits() -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BUSWAY_ENV": "production",
        "BUS_SIGNING_KEY": development_key("users"),
        "BUS_TRUSTED_KEYS": '{"gateway": "' + "g" * 40 + '"}',
    }
    result = subprocess.run(
        [sys.executable, "-m", "handlers.users", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "BUS_SIGNING_KEY is a development key; set a secret one in production" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_signature_spec_in_the_docs_matches_the_code() -> None:
    """docs/wire-format.md#signatures, implemented from the spec alone, agrees with bus.signing."""

    def sign(message: dict[str, Any], payload: bytes, key: str) -> str:
        h = message.get("headers", {})
        values = [
            message.get("id"),
            message.get("type"),
            message.get("version"),
            message.get("occurred_at"),
            message.get("correlation_id"),
            message.get("causation_id"),
            message.get("producer"),
            h.get("reply_to"),
            h.get("deadline"),
            h.get("reply_key"),
            h.get("content-type") or "application/json",
            h.get("content-transfer-encoding"),
        ]
        fields = json.dumps(["" if v is None else str(v) for v in values], separators=(",", ":"), ensure_ascii=False)
        canonical = b"busway-signature-v1\n" + fields.encode() + b"\n" + payload
        key_id = hashlib.sha256(b"busway key id\n" + key.encode()).hexdigest()[:16]
        return f"v1:{key_id}:{hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()}"

    headers = {**HEADERS, "version": 1, "causation_id": 'a "quoted"\\ tab\t line\n é ✓', "reply_key": "k/outcome"}
    data = wire.encode(headers, PAYLOAD, signer=Signer("gateway", KEY))
    message = json.loads(data)
    payload = json.dumps(message["payload"], separators=(",", ":")).encode()
    assert payload == PAYLOAD
    assert sign(message, payload, KEY) == message["headers"]["signature"]
