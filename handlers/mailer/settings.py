"""The mailer's settings (env prefix ``MAILER_``). It keeps no database: its state is in Redis."""

from email.utils import parseaddr
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.settings import BusSettings, Environment


class MailerSettings(BaseSettings):
    """Everything the mailer reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="MAILER_", env_file=".env", extra="ignore", populate_by_name=True)

    environment: Environment = Field(default="development", validation_alias="BUSWAY_ENV")
    transport: Literal["file", "smtp"] = Field(
        default="file", description="file: one .eml per mail in outbox_dir; smtp: an SMTP server."
    )
    outbox_dir: Path = Field(default=Path("var/mail"), description="Where the file transport writes mails.")
    sender: str = Field(default="busway <no-reply@localhost>", description="The From of every mail.")
    product_name: str = Field(default="busway", min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")
    reset_url: str = Field(
        default="http://localhost:8000/reset-password?token={token}",
        description="The link in a reset mail; {token} is replaced by the one-time token.",
    )
    max_event_age: float = Field(
        default=86_400, gt=0, description="Seconds: no welcome mail for a registration older than this."
    )
    inbox_ttl: float = Field(
        default=7 * 86_400, gt=0, description="Seconds a sent mail's event id (and a recipient) is remembered."
    )
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65_535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout: float = Field(default=10.0, gt=0, le=300)
    metrics_port: int | None = Field(
        default=None, ge=0, le=65_535, description="Serve /metrics on this port; unset: off; 0: any free port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint listens on.")
    bus: BusSettings = Field(default_factory=BusSettings)

    @field_validator("sender")
    @classmethod
    def _sender(cls, sender: str) -> str:
        if "@" not in parseaddr(sender)[1] or any(c in sender for c in "\r\n"):
            msg = "must be an address, e.g. 'busway <no-reply@example.com>'"
            raise ValueError(msg)
        return sender

    @field_validator("reset_url")
    @classmethod
    def _reset_url(cls, url: str) -> str:
        try:
            filled = url.format(token="t")  # noqa: S106 (a placeholder, not a secret)
        except (KeyError, IndexError, ValueError):
            filled = url
        if filled == url or not url.startswith(("http://", "https://")):
            msg = "must be an http(s) URL with one {token} placeholder and no other braces"
            raise ValueError(msg)
        return url

    @model_validator(mode="after")
    def _smtp_login_is_complete(self) -> Self:
        if (self.smtp_username is None) != (self.smtp_password is None):
            msg = "MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD go together"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _production_needs_bus_keys(self) -> Self:
        if self.environment == "production" and (problem := self.bus.production_problem()) is not None:
            raise ValueError(problem)
        return self

    @property
    def log_secrets(self) -> bool:
        """Whether a reset link may be logged (development only: it carries a live token)."""
        return self.environment == "development"
