"""The users service's settings (env prefix ``USERS_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from db.engine import DatabaseUrl
from handlers.settings import HandlerSettings


class UsersSettings(HandlerSettings):
    """Everything the users service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="USERS_")

    database_url: DatabaseUrl = "sqlite+aiosqlite:///var/users.db"
    database_read_url: DatabaseUrl | None = Field(
        default=None, description="Queries go here (a replica); defaults to database_url."
    )
