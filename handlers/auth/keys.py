"""Signing keys: Ed25519 (JWT ``EdDSA``), identified by their RFC 7638 thumbprint.

The newest key signs; every key is published in the JWKS so tokens signed with an older
key stay valid until they expire. In development a key is generated on first start.
Keys from a folder are read again while the service runs (:class:`KeyFolderWatcher`), so
``busway rotate-keys`` needs no restart.
"""

import asyncio
import base64
import contextlib
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

    def __init__(self, keys: list[SigningKey], folder: Path | None = None) -> None:
        """``folder``: where the keys came from, read again by :meth:`reload` (None: fixed keys)."""
        if not keys:
            msg = "no signing key"
            raise ValueError(msg)
        self._keys = keys
        self.folder = folder
        self._seen = _listing(folder) if folder is not None else ()

    @classmethod
    def load(cls, pem: str | None, folder: Path, *, generate: bool) -> "KeyRing":
        """Keys from ``pem`` or from ``folder`` (oldest first by name); maybe make one."""
        if pem:
            return cls([SigningKey.from_pem(pem.encode())])
        files = key_files(folder)
        if not files:
            if not generate:
                msg = f"no signing key in {folder}"
                raise ValueError(msg)
            files = [write_new_key(folder)]
            logger.warning("generated a development signing key in {}", files[0])
        return cls([SigningKey.from_pem(path.read_bytes()) for path in files], folder)

    def reload(self) -> bool:
        """Read the folder again if its keys changed; whether the ring changed.

        A folder that would leave no key, or holds a file that is not a key, changes
        nothing: the service goes on signing with what it has (and logs why).
        """
        if self.folder is None:
            return False
        seen = _listing(self.folder)
        if seen == self._seen:
            return False
        try:
            keys = [SigningKey.from_pem(path.read_bytes()) for path in key_files(self.folder)]
        except (OSError, ValueError) as exc:
            logger.error("signing keys in {} not reloaded, keeping the current ones: {}", self.folder, exc)
            return False
        finally:
            self._seen = seen
        if not keys:
            logger.error("no signing key left in {}; keeping the current ones", self.folder)
            return False
        self._keys = keys
        logger.info("loaded {} signing keys from {}; {} signs", len(keys), self.folder, self.current.kid)
        return True

    @property
    def kids(self) -> list[str]:
        """The key ids, oldest first."""
        return [key.kid for key in self._keys]

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
        key = self.current  # once: a reload may swap the ring between two reads
        token = jwt.encode(payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, ttl


def key_files(folder: Path) -> list[Path]:
    """The ``*.pem`` files of ``folder``, oldest first (by name); none if it does not exist."""
    return sorted(folder.glob("*.pem")) if folder.is_dir() else []


def _listing(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies the folder's keys: names, sizes, modification times."""
    found = []
    for path in key_files(folder):
        with contextlib.suppress(OSError):  # deleted meanwhile: the next look sees it gone
            stat = path.stat()
            found.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def write_new_key(folder: Path) -> Path:
    """Write a new key to ``folder``; named so that it sorts after the existing ones."""
    folder.mkdir(parents=True, exist_ok=True)
    newest = key_files(folder)[-1].name if key_files(folder) else ""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{stamp}-{uuid.uuid4().hex[:6]}.pem"
    while name <= newest:  # a clock set back, or two keys in one second: still the newest
        stamp += "z"
        name = f"{stamp}-{uuid.uuid4().hex[:6]}.pem"
    path = folder / name
    # Written under a name the loader ignores, then renamed: a running service never reads half a key.
    partial = folder / f".{name}.partial"
    # Created readable by the owner only: never briefly world-readable.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(generate_pem())
    partial.rename(path)
    return path


class RetireRefused(ValueError):
    """A key that may not be retired (the one that signs, or an unknown one)."""


def retire_key(folder: Path, kid: str) -> Path:
    """Delete the key ``kid`` from ``folder``; never the newest one, which signs; its file."""
    files = key_files(folder)
    owners = {SigningKey.from_pem(path.read_bytes()).kid: path for path in files}
    if kid not in owners:
        known = ", ".join(owners) or "none"
        msg = f"no signing key {kid!r} in {folder} (keys: {known})"
        raise RetireRefused(msg)
    path = owners[kid]
    if path == files[-1]:
        msg = f"key {kid} is the newest and signs new tokens; rotate first, retire it later"
        raise RetireRefused(msg)
    path.unlink()
    return path


class KeyFolderWatcher:
    """Re-reads the signing keys folder every ``interval`` seconds, so a rotation needs no restart."""

    def __init__(self, ring: KeyRing, interval: float) -> None:
        self._ring = ring
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin watching (nothing to watch for a key given in the environment)."""
        if self._ring.folder is not None:
            self._task = asyncio.create_task(self._watch(), name="watch signing keys")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self._ring.reload)
            except Exception:  # a bad moment on disk must not end the watching
                logger.exception("could not read the signing keys folder")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
