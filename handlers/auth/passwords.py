"""Password hashing: argon2 for new hashes, bcrypt accepted (the monolith's), off the event loop."""

import asyncio
import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from passlib.context import CryptContext

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()

T = TypeVar("T")


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 32 * 1024 * 1024
"""Allocations below this come from the heap: glibc's largest threshold, above any usual argon2 buffer."""
_TRIM_THRESHOLD = 512 * 1024 * 1024
"""No trim on free below this: the idle release gives the buffers back instead."""


def _releaser() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, its heap set up for the hashing buffers; None without glibc.

    By default glibc gives each new thread an arena of its own, and ``malloc_trim``
    cannot return the free top of a thread's arena, which is where a freed argon2 buffer
    ends up: one arena, the main one, where it can. Fixed thresholds keep that heap
    steady under load: with glibc's sliding ones, two buffers freed together could cross
    the trim threshold and be returned at once, to be faulted in again by the next hashes
    (measured over 120 hashes two at a time: 3 to 11 buffers' worth of page faults,
    against about 1 with fixed thresholds). Set before the hashing
    threads exist (their pool starts them at the first hash); threads that already have
    an arena keep it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
        settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
        accepted = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    except (AttributeError, OSError):  # not glibc (musl has no malloc_trim)
        return None
    return trim if accepted else None


def hashing_pool(workers: int, niceness: int) -> ThreadPoolExecutor:
    """The process's threads for hashing: ``workers`` of them, at ``niceness``.

    One pool per process (and size), shared by every hasher in it.
    """
    key = (workers, niceness)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(
                workers, thread_name_prefix="password-hashing", initializer=_yield_cpu, initargs=(niceness,)
            )
        return pool


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _yield_cpu(niceness: int) -> None:
    """Lower this thread's CPU priority to ``niceness`` (on Linux a thread has its own).

    A hash takes tens of milliseconds of CPU; at a lower priority it runs whenever a CPU
    is idle but gives way to request handling (this process's event loop, and other
    services' processes in the same scheduling group), so reads stay fast while logins
    hash. Linux weighs nice only within a cgroup (or session autogroup): services in
    separate containers or systemd units share CPU by their groups' weights (cpu.weight,
    CPU shares), which is where to give auth less than the others.
    """
    if niceness and sys.platform == "linux":
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):  # never fatal: hashing still works at the same priority
            os.setpriority(os.PRIO_PROCESS, thread, max(niceness, os.getpriority(os.PRIO_PROCESS, thread)))


class PasswordHasher:
    """Hashes and verifies passwords in worker threads; upgrades old hashes."""

    def __init__(
        self,
        *,
        time_cost: int = 2,
        memory_cost: int = 19_456,
        parallelism: int = 1,
        concurrency: int | None = None,
        niceness: int = 10,
        release_after: float = 1.0,
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
        # Each hash's argon2 buffer (memory_cost KiB) stays in the process's heap after
        # the hash: glibc keeps it for the next one. Once no hash has run for
        # ``release_after`` seconds it goes back to the system, so a burst of logins does
        # not leave the service that much bigger; back-to-back hashes keep reusing it
        # (giving it back after each one costs every hash its page faults, ~10 ms).
        # Set up before the pool's threads exist.
        self._release_after = release_after
        self._trim = _releaser() if release_after > 0 else None
        # A bulkhead for the CPU: at most this many hashes run at once, each in a worker
        # thread off the event loop and at a lower CPU priority; the rest wait their turn
        # instead of piling up threads, memory and latency for every other request.
        self._pool = hashing_pool(concurrency or usable_cpus(), niceness)
        self._hashing = 0
        self._release: asyncio.TimerHandle | None = None

    async def hash(self, password: str) -> str:
        """A new argon2 hash of ``password``."""
        return await self._in_pool(self._context.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Whether ``password`` matches ``stored``, and a replacement hash when it is outdated."""
        return await self._in_pool(self._verify, password, stored)

    async def _in_pool(self, work: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        if self._release is not None:
            self._release.cancel()
            self._release = None
        self._hashing += 1
        try:
            return await loop.run_in_executor(self._pool, work, *args)
        finally:
            self._hashing -= 1
            if self._hashing == 0 and self._trim is not None:
                self._release = loop.call_later(self._release_after, self._release_memory)

    def _release_memory(self) -> None:
        """Give the freed hashing buffers back to the system (in the pool: it is not free)."""
        self._release = None
        if self._trim is not None:
            self._pool.submit(self._trim, 0)

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
