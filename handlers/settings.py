"""The settings every handler service shares; each service adds its own and its env prefix."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    @property
    def migrate_at_start(self) -> bool:
        """Whether the service applies its migrations when it starts."""
        return self.environment != "production" if self.migrate_on_start is None else self.migrate_on_start
