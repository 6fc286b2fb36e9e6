"""The gateway's settings (env prefix ``GATEWAY_``)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.settings import BusSettings, Environment


class GatewaySettings(BaseSettings):
    """Everything the gateway reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore", populate_by_name=True)

    environment: Environment = Field(default="development", validation_alias="BUSWAY_ENV")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65_535)
    jwt_issuer: str = "busway-auth"
    jwt_audience: str = "busway"
    jwt_leeway: int = Field(default=30, ge=0, le=300, description="Seconds of clock skew tolerated.")
    registration_wait: float = Field(
        default=3.0, ge=0, le=60, description="Seconds register waits for the saga before answering 202."
    )
    ready_services: tuple[str, ...] = ("users", "auth")
    bus: BusSettings = Field(default_factory=BusSettings)
