"""The gateway's settings (env prefix ``GATEWAY_``)."""

from pathlib import Path
from typing import Annotated, Self

from pydantic import AnyHttpUrl, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.settings import BusSettings, Environment
from gateway.legacy import RouteTableError, load_route_table


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

    # Per downstream service (the first part of a command stream's name): docs/resilience.md.
    service_timeouts: dict[str, Annotated[float, Field(gt=0, le=300)]] = Field(
        default_factory=dict,
        description='Seconds one call to a service may take, retries included, e.g. {"users": 2}; '
        "default BUS_REQUEST_TIMEOUT.",
    )
    attempt_timeout: float = Field(
        default=1.0, gt=0, le=300, description="Seconds one attempt of an idempotent query may take before a retry."
    )
    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts of an idempotent query that failed.")
    retry_backoff_base: float = Field(default=0.05, ge=0, le=10, description="Seconds before the first retry, at most.")
    retry_backoff_cap: float = Field(default=1.0, ge=0, le=60, description="Longest wait between two attempts.")
    breaker_fail_max: int = Field(
        default=5, ge=1, le=1000, description="Consecutive failures (timeouts, unavailable) that open a circuit."
    )
    breaker_reset_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds an open circuit refuses calls before one probe may pass."
    )
    max_in_flight: int = Field(default=256, ge=1, le=100_000, description="Calls in progress per service, at most.")

    # Strangler fig (docs/migration.md): the monolith behind the gateway, and which routes it keeps.
    legacy_url: AnyHttpUrl | None = Field(
        default=None, description="The monolith's base URL; unset: busway answers every route."
    )
    routes_file: Path | None = Field(
        default=None, description="TOML or JSON route table: per method and path, bus or legacy. Read at start."
    )
    legacy_timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds the monolith may take (per read).")
    legacy_connect_timeout: float = Field(default=5.0, gt=0, le=300, description="Seconds to connect to the monolith.")

    @model_validator(mode="after")
    def _check_routes_file(self) -> Self:
        # A broken route table stops the gateway at start with one clear line, not at the first request.
        if self.routes_file is not None:
            if self.legacy_url is None:
                msg = "GATEWAY_ROUTES_FILE is set but GATEWAY_LEGACY_URL is not"
                raise ValueError(msg)
            try:
                load_route_table(self.routes_file)
            except RouteTableError as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _production_needs_bus_keys(self) -> Self:
        if self.environment == "production" and (problem := self.bus.production_problem()) is not None:
            raise ValueError(problem)
        return self

    def service_timeout(self, service: str) -> float:
        """The deadline of one call to ``service``."""
        return self.service_timeouts.get(service, self.bus.request_timeout)
