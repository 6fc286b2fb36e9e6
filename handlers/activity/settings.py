"""The activity service's settings (env prefix ``ACTIVITY_``)."""

from pydantic_settings import SettingsConfigDict

from db.engine import DatabaseUrl
from handlers.settings import HandlerSettings


class ActivitySettings(HandlerSettings):
    """Everything the activity service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="ACTIVITY_")

    database_url: DatabaseUrl = "sqlite+aiosqlite:///var/activity.db"
