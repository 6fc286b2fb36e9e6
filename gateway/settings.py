"""The gateway's settings (env prefix ``GATEWAY_``)."""

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Self

from pydantic import AnyHttpUrl, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.settings import BusSettings, Environment
from gateway.legacy import RouteTableError, load_route_table

RATE_LIMITED_ROUTES = ("register", "login", "refresh", "password-reset", "password-reset-confirm")
"""The auth routes anyone may call, each with its own rate-limit counter per client IP."""


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

    # Brute force and abuse of the auth routes (docs/auth.md#lockout-and-rate-limits).
    login_max_failures: int = Field(
        default=5, ge=1, le=1000, description="Failed logins of one account within the window that lock it out."
    )
    login_failure_window: int = Field(
        default=900, ge=1, le=86_400, description="Seconds failed logins are counted over, from the first one."
    )
    login_max_failures_per_ip: int = Field(
        default=50, ge=1, le=100_000, description="Failed logins from one client IP within the window that lock it out."
    )
    rate_limit: int = Field(
        default=30, ge=0, le=1_000_000, description="Requests per window per client IP on each auth route; 0: off."
    )
    rate_limit_window: int = Field(default=60, ge=1, le=86_400, description="Seconds of one rate-limit window.")
    rate_limits: dict[str, Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict,
        description='Per-route overrides of rate_limit, e.g. {"register": 5}; routes: register, login, '
        "refresh, password-reset, password-reset-confirm.",
    )
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = Field(
        default=(),
        description="Peers (addresses or CIDR networks) whose X-Forwarded-For is believed; empty: none.",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(), description='Origins allowed by CORS, e.g. ["https://app.example.com"]; empty: no CORS headers.'
    )

    @field_validator("rate_limits")
    @classmethod
    def _known_routes(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(RATE_LIMITED_ROUTES))
        if unknown:
            msg = f"unknown routes {unknown}; choose from {', '.join(RATE_LIMITED_ROUTES)}"
            raise ValueError(msg)
        return value

    def route_rate_limit(self, route: str) -> int:
        """Requests per window per client IP allowed on ``route`` (0: unlimited)."""
        return self.rate_limits.get(route, self.rate_limit)

    def service_timeout(self, service: str) -> float:
        """The deadline of one call to ``service``."""
        return self.service_timeouts.get(service, self.bus.request_timeout)
