"""Settings every process on the bus shares (env prefix ``BUS_``, plus ``REDIS_URL``)."""

from typing import Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


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
    polling_interval_ms: int = Field(default=1000, ge=10, le=60_000, description="XREADGROUP block time.")
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

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if urlparse(url).scheme not in {"redis", "rediss", "unix"}:
            msg = "must be a redis://, rediss:// or unix:// URL"
            raise ValueError(msg)
        return url

    def name(self, base: str) -> str:
        """The full name of a stream, channel or key, with this deployment's prefix."""
        return f"{self.prefix}{base}"
