"""The users service's settings (env prefix ``USERS_``)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.settings import BusSettings, Environment
from db.engine import DatabaseUrl


class UsersSettings(BaseSettings):
    """Everything the users service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="USERS_", env_file=".env", extra="ignore", populate_by_name=True)

    environment: Environment = Field(default="development", validation_alias="BUSWAY_ENV")
    database_url: DatabaseUrl = "sqlite+aiosqlite:///var/users.db"
    database_read_url: DatabaseUrl | None = Field(
        default=None, description="Queries go here (a replica); defaults to database_url."
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    migrate_on_start: bool | None = Field(default=None, description="Default: on in development.")
    bus: BusSettings = Field(default_factory=BusSettings)

    @property
    def migrate_at_start(self) -> bool:
        """Whether the service applies its migrations when it starts."""
        return self.environment != "production" if self.migrate_on_start is None else self.migrate_on_start
