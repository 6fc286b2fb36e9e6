"""Settings every process on the bus shares (env prefix ``BUS_``, plus ``REDIS_URL``)."""

import json
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.signing import DEVELOPMENT_KEY_PREFIX, Signer, Verifier, development_key

Environment = Literal["development", "test", "production"]

MIN_KEY_LENGTH = 32


class BusSettings(BaseSettings):
    """How to reach Redis and how to name things on it."""

    model_config = SettingsConfigDict(env_prefix="BUS_", env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(
        default="redis://localhost:6379",
        validation_alias=AliasChoices("REDIS_URL", "BUS_REDIS_URL"),
        description="Redis server holding the streams.",
    )
    prefix: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description="Put in front of every stream, channel and key name.",
    )
    request_timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds a requester waits for a reply.")
    max_records: int = Field(default=32, ge=1, le=1000, description="Entries fetched by one XREADGROUP.")
    polling_interval_ms: int = Field(
        default=5000,
        ge=10,
        le=60_000,
        description="XREADGROUP block time: a new entry wakes a blocked read at once, so this sets how often "
        "an idle subscriber asks Redis again (and, plus 5 s, how long a read may go unanswered before its "
        "connection is taken for dead).",
    )
    claim_interval_ms: int = Field(
        default=1000,
        ge=10,
        le=60_000,
        description="How often each claimer looks for entries pending longer than claim_idle_ms, and so how "
        "soon the entries a stopping instance hands back are taken by another.",
    )
    max_workers: int = Field(default=16, ge=1, le=1024, description="Messages one subscriber handles at once.")
    claim_idle_ms: int = Field(
        default=15_000, ge=100, le=3_600_000, description="Pending this long, an entry is handed out again."
    )
    max_deliveries: int = Field(default=5, ge=1, le=100, description="Deliveries of an event before its dead letter.")
    command_stream_maxlen: int = Field(
        default=10_000, ge=100, le=10_000_000, description="Entries a command stream keeps, about (XADD MAXLEN ~)."
    )
    heartbeat_interval: float = Field(default=2.0, gt=0, le=60)
    shutdown_grace: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a stopping handler gives its in-flight messages to finish; what is left "
        "stays pending and is claimed by another instance.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("LOG_FORMAT", "BUS_LOG_FORMAT")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "BUS_LOG_LEVEL"))
    environment: Environment = Field(default="development", validation_alias="BUSWAY_ENV")
    signing_key: SecretStr | None = Field(
        default=None,
        description="This service's key: it signs every message the service publishes (HMAC-SHA256). "
        "Default outside production: derived from the service name.",
    )
    signing_key_file: Path | None = Field(default=None, description="A file holding BUS_SIGNING_KEY instead.")
    trusted_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        repr=False,
        description='The keys of the services whose messages are accepted: JSON {"gateway": "key", '
        '"auth": ["new key", "old key"]}. Outside production a service not listed is checked against its '
        "development key.",
    )
    trusted_keys_dir: Path | None = Field(
        default=None,
        description="A folder of trusted keys instead: <service>.key, or <service>.<anything>.key for more than one.",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if urlparse(url).scheme not in {"redis", "rediss", "unix"}:
            msg = "must be a redis://, rediss:// or unix:// URL"
            raise ValueError(msg)
        return url

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _one_or_more_keys(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                msg = 'must be a JSON object, {"service": "key" or ["key", ...]}'
                raise ValueError(msg) from None
        if isinstance(value, dict):
            return {service: [keys] if isinstance(keys, str) else keys for service, keys in value.items()}
        return value

    @model_validator(mode="after")
    def _load_key_files(self) -> Self:
        if self.signing_key_file is not None:
            try:
                self.signing_key = SecretStr(self.signing_key_file.read_text().strip())
            except OSError as exc:
                msg = f"BUS_SIGNING_KEY_FILE cannot be read: {exc.strerror}"
                raise ValueError(msg) from None
        if self.trusted_keys_dir is not None:
            try:
                files = sorted(self.trusted_keys_dir.glob("*.key"))
                if not self.trusted_keys_dir.is_dir():
                    raise NotADirectoryError(20, "not a directory")
                for file in files:
                    service = file.name.split(".", 1)[0]
                    self.trusted_keys.setdefault(service, []).append(file.read_text().strip())
            except OSError as exc:
                msg = f"BUS_TRUSTED_KEYS_DIR cannot be read: {exc.strerror}"
                raise ValueError(msg) from None
        return self

    @model_validator(mode="after")
    def _no_development_keys_in_production(self) -> Self:
        if self.environment == "production" and (problem := self._key_problem()) is not None:
            raise ValueError(problem)
        return self

    def _key_problem(self) -> str | None:
        if self.signing_key is not None:
            key = self.signing_key.get_secret_value()
            if key.startswith(DEVELOPMENT_KEY_PREFIX):
                return "BUS_SIGNING_KEY is a development key; set a secret one in production"
            if len(key) < MIN_KEY_LENGTH:
                return f"BUS_SIGNING_KEY must be at least {MIN_KEY_LENGTH} characters in production"
        for service, keys in self.trusted_keys.items():
            if any(key.startswith(DEVELOPMENT_KEY_PREFIX) for key in keys):
                return f"BUS_TRUSTED_KEYS holds a development key of {service}; set secret ones in production"
        return None

    def production_problem(self) -> str | None:
        """Why a service cannot run in production with these keys (missing, or development ones), or None.

        Services check this when ``BUSWAY_ENV=production``; tools that only read the bus
        (inspecting streams, replaying stored messages) need no key of their own.
        """
        if self.signing_key is None:
            return "BUS_SIGNING_KEY (or BUS_SIGNING_KEY_FILE) must be set in production"
        if not self.trusted_keys:
            return "BUS_TRUSTED_KEYS (or BUS_TRUSTED_KEYS_DIR) must be set in production"
        return self._key_problem()

    def signer(self, service: str) -> Signer:
        """What signs the messages ``service`` publishes: its key, or its development key."""
        if self.signing_key is not None:
            return Signer(service, self.signing_key.get_secret_value())
        if self.environment == "production":
            msg = "BUS_SIGNING_KEY (or BUS_SIGNING_KEY_FILE) must be set in production"
            raise ValueError(msg)
        return Signer(service, development_key(service))

    def verifier(self) -> Verifier:
        """What checks the signatures of messages received: the trusted keys (development: derived too)."""
        return Verifier(self.trusted_keys, development=self.environment != "production")

    def name(self, base: str) -> str:
        """The full name of a stream, channel or key, with this deployment's prefix."""
        return f"{self.prefix}{base}"
