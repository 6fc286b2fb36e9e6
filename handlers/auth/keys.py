"""Signing keys: Ed25519 (JWT ``EdDSA``), identified by their RFC 7638 thumbprint.

The newest key signs; every key is published in the JWKS so tokens signed with an older
key stay valid until they expire. In development a key is generated on first start.
"""

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from loguru import logger

ALGORITHM = "EdDSA"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """One private key and its public JWK."""

    kid: str
    private: Ed25519PrivateKey
    jwk: dict[str, Any]

    @classmethod
    def from_pem(cls, pem: bytes) -> "SigningKey":
        """Load a PEM (PKCS#8) Ed25519 private key."""
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            msg = "the signing key is not a PEM private key without a password"
            raise ValueError(msg) from None
        if not isinstance(private, Ed25519PrivateKey):
            msg = "signing keys must be Ed25519 private keys (PKCS#8 PEM)"
            raise ValueError(msg)  # noqa: TRY004  a bad config value, not a programming error
        public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
        thumbprint = json.dumps({"crv": public["crv"], "kty": public["kty"], "x": public["x"]}, separators=(",", ":"))
        kid = _b64(hashlib.sha256(thumbprint.encode()).digest())[:16]
        return cls(kid=kid, private=private, jwk={**public, "kid": kid, "alg": ALGORITHM, "use": "sig"})


def generate_pem() -> bytes:
    """A new Ed25519 private key as PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyRing:
    """The keys the auth service signs with (the newest) and publishes (all)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            msg = "no signing key"
            raise ValueError(msg)
        self._keys = keys

    @classmethod
    def load(cls, pem: str | None, folder: Path, *, generate: bool) -> "KeyRing":
        """Keys from ``pem`` or from ``folder`` (oldest first by name); maybe make one."""
        if pem:
            return cls([SigningKey.from_pem(pem.encode())])
        files = sorted(folder.glob("*.pem")) if folder.is_dir() else []
        if not files:
            if not generate:
                msg = f"no signing key in {folder}"
                raise ValueError(msg)
            files = [write_new_key(folder)]
            logger.warning("generated a development signing key in {}", files[0])
        return cls([SigningKey.from_pem(path.read_bytes()) for path in files])

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens."""
        return self._keys[-1]

    def jwks(self) -> list[dict[str, Any]]:
        """Every public key, newest first."""
        return [key.jwk for key in reversed(self._keys)]

    def sign(self, claims: dict[str, Any], ttl: int) -> tuple[str, int]:
        """A signed JWT with ``iat``, ``exp`` and ``jti`` added; and its lifetime."""
        now = datetime.now(UTC)
        payload = {**claims, "iat": now, "exp": now + timedelta(seconds=ttl), "jti": uuid.uuid4().hex}
        token = jwt.encode(payload, self.current.private, algorithm=ALGORITHM, headers={"kid": self.current.kid})
        return token, ttl


def write_new_key(folder: Path) -> Path:
    """Write a new key to ``folder``; named so that it sorts after the existing ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.pem"
    # Created readable by the owner only: never briefly world-readable.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(generate_pem())
    return path
