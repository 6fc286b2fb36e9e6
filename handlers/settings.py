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
    bus: BusSettings = Field(default_factory=BusSettings)
    event_log_retention_days: int = Field(
        default=30, ge=0, le=36_500, description="Days published events stay in the event log; 0 keeps them for ever."
    )
    event_log_prune_interval: float = Field(
        default=3600.0, ge=1, le=7 * 86_400, description="Seconds between prunes of the event log."
    )

    @property
    def migrate_at_start(self) -> bool:
        """Whether the service applies its migrations when it starts."""
        return self.environment != "production" if self.migrate_on_start is None else self.migrate_on_start
