"""Password hashing: argon2 for new hashes, bcrypt accepted (the monolith's), off the event loop."""

import asyncio
import os

from passlib.context import CryptContext


class PasswordHasher:
    """Hashes and verifies passwords in worker threads; upgrades old hashes."""

    def __init__(
        self, *, time_cost: int = 2, memory_cost: int = 19_456, parallelism: int = 1, concurrency: int | None = None
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated="auto",
            argon2__time_cost=time_cost,
            argon2__memory_cost=memory_cost,
            argon2__parallelism=parallelism,
        )
        # Verified when the email is unknown, so both cases cost the same time.
        self._dummy = self._context.hash("busway-timing-equaliser")
        # A bulkhead for the CPU: at most this many hashes run at once (each in a worker
        # thread, off the event loop); the rest wait here instead of piling up threads,
        # memory and latency for every other request.
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)

    async def hash(self, password: str) -> str:
        """A new argon2 hash of ``password``."""
        async with self._slots:
            return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Whether ``password`` matches ``stored``, and a replacement hash when it is outdated."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, password, stored)

    def _verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        try:
            if stored is None:
                self._context.verify(password, self._dummy)
                return False, None
            valid, new_hash = self._context.verify_and_update(password, stored)
            return bool(valid), new_hash
        except ValueError:
            # bcrypt 5 refuses passwords over 72 bytes, and a malformed hash raises too:
            # both are a failed verification, never a crash.
            return False, None
