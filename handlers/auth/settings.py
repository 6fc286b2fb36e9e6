"""The auth service's settings (env prefix ``AUTH_``)."""

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from db.engine import DatabaseUrl
from handlers.auth.keys import SigningKey
from handlers.settings import HandlerSettings


class AuthSettings(HandlerSettings):
    """Everything the auth service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="AUTH_")

    database_url: DatabaseUrl = "sqlite+aiosqlite:///var/auth.db"
    token_issuer: str = "busway-auth"
    token_audience: str = "busway"
    access_token_ttl: int = Field(default=900, ge=30, le=86_400, description="Seconds.")
    refresh_token_ttl: int = Field(
        default=30 * 86_400, ge=60, le=365 * 86_400, description="Seconds a session lasts after its latest refresh."
    )
    password_reset_ttl: int = Field(default=3_600, ge=60, le=86_400, description="Seconds a reset token is valid.")
    signing_key: SecretStr | None = Field(default=None, description="PEM of the Ed25519 private key that signs tokens.")
    signing_keys_dir: Path | None = Field(
        default=None, description="Folder of *.pem signing keys; the newest signs, all verify."
    )
    keys_reload_interval: float = Field(
        default=10.0, ge=0.1, le=3600, description="Seconds between looks at the signing keys folder for new keys."
    )
    # OWASP's argon2id baseline (m=19 MiB, t=2, p=1): strong, and the memory each
    # concurrent hash takes stays small enough to bound the service's RSS.
    argon2_time_cost: int = Field(default=2, ge=1, le=20)
    argon2_memory_cost: int = Field(default=19_456, ge=1024, le=4_194_304, description="KiB.")
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    hashing_concurrency: int | None = Field(
        default=None, ge=1, le=64, description="Hashes computed at once; default: the CPUs this process may use."
    )
    hashing_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority of the hashing threads (Linux nice; 0: as the process), so requests go first.",
    )
    hashing_release_after: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Seconds without a hash after which the hashing threads' argon2 buffers go back to the "
        "system (0: kept for the next hash).",
    )

    @property
    def keys_dir(self) -> Path:
        """Where signing keys live: configured, or ``./var/auth-keys`` in development."""
        return self.signing_keys_dir or Path("var/auth-keys")

    @model_validator(mode="after")
    def _signing_key_loads(self) -> Self:
        if self.signing_key is not None:
            SigningKey.from_pem(self.signing_key.get_secret_value().encode())
        return self

    @model_validator(mode="after")
    def _production_needs_keys(self) -> Self:
        if self.environment == "production" and self.signing_key is None and self.signing_keys_dir is None:
            msg = "AUTH_SIGNING_KEY or AUTH_SIGNING_KEYS_DIR must be set in production"
            raise ValueError(msg)
        return self
