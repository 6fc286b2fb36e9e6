"""The settings every handler service shares; each service adds its own and its env prefix."""

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from bus.settings import BusSettings, Environment
from db.engine import DatabaseUrl


class HandlerSettings(BaseSettings):
    """Environment, its own database, the bus."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: Environment = Field(default="development", validation_alias="BUSWAY_ENV")
    database_url: DatabaseUrl
    database_pool_size: int = Field(default=10, ge=1, le=200)
    migrate_on_start: bool | None = Field(default=None, description="Default: on outside production.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65_535, description="Serve /metrics on this port; unset: off; 0: any free port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint listens on.")
    bus: BusSettings = Field(default_factory=BusSettings)
    event_log_retention_days: int = Field(
        default=30, ge=0, le=36_500, description="Days published events stay in the event log; 0 keeps them for ever."
    )
    event_log_prune_interval: float = Field(
        default=3600.0, ge=1, le=7 * 86_400, description="Seconds between prunes of the event log."
    )

    @model_validator(mode="after")
    def _production_secrets(self) -> Self:
        if self.environment != "production":
            return self
        for name in ("database_url", "database_read_url"):
            url = getattr(self, name, None)
            if url and development_password(url):
                prefix = str(self.model_config.get("env_prefix", ""))
                msg = f"{prefix}{name.upper()} uses a development password; set a secret one in production"
                raise ValueError(msg)
        problem = self.bus.production_problem()
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def migrate_at_start(self) -> bool:
        """Whether the service applies its migrations when it starts."""
        return self.environment != "production" if self.migrate_on_start is None else self.migrate_on_start


DEVELOPMENT_PASSWORD_MARK = "dev-password"
"""deploy/postgres/init.sql and compose.yml's defaults are ``<service>-dev-password``."""


def development_password(url: str) -> bool:
    """Whether a database URL carries one of the development passwords."""
    try:
        password = make_url(url).password
    except Exception:  # an unusable URL is reported by its own validator
        return False
    return bool(password) and DEVELOPMENT_PASSWORD_MARK in str(password)
