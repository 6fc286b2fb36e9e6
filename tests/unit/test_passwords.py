"""Password hashing: argon2 by default, monolith bcrypt hashes accepted and upgraded."""

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import bcrypt
import pytest

from handlers.auth.passwords import PasswordHasher, hashing_pool

ROOT = Path(__file__).resolve().parents[2]
"""The project, where the probes' ``import handlers`` resolves."""

FAST = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


async def test_argon2_hash_verifies_and_rejects_wrong_passwords() -> None:
    hasher = PasswordHasher(**FAST)
    stored = await hasher.hash("correct horse")
    assert stored.startswith("$argon2")
    assert await hasher.verify("correct horse", stored) == (True, None)
    assert (await hasher.verify("wrong horse", stored))[0] is False


async def test_bcrypt_hash_from_the_monolith_is_accepted_and_upgraded() -> None:
    hasher = PasswordHasher(**FAST)
    legacy = bcrypt.hashpw(b"old password", bcrypt.gensalt(rounds=4)).decode()
    valid, upgraded = await hasher.verify("old password", legacy)
    assert valid is True
    assert upgraded is not None
    assert upgraded.startswith("$argon2")
    assert await hasher.verify("old password", upgraded) == (True, None)


async def test_long_passwords_against_bcrypt_fail_cleanly() -> None:
    hasher = PasswordHasher(**FAST)
    legacy = bcrypt.hashpw(b"short", bcrypt.gensalt(rounds=4)).decode()
    assert await hasher.verify("x" * 100, legacy) == (False, None)


async def test_unknown_user_and_malformed_hash_fail_without_raising() -> None:
    hasher = PasswordHasher(**FAST)
    assert await hasher.verify("anything", None) == (False, None)
    assert await hasher.verify("anything", "not-a-hash") == (False, None)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
async def test_hashing_threads_give_way_to_request_handling() -> None:
    hasher = PasswordHasher(**FAST, concurrency=1, niceness=7)
    await hasher.hash("warm the thread up")

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    main_thread = priority()
    hashing_thread = await asyncio.get_running_loop().run_in_executor(hashing_pool(1, 7), priority)
    assert hashing_thread >= max(7, main_thread)
    assert priority() == main_thread  # the event loop's thread keeps its priority


RELEASE_PROBE = """
import asyncio, sys
from handlers.auth.passwords import PasswordHasher

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))

async def main(release_after):
    hasher = PasswordHasher(
        time_cost=1, memory_cost=19_456, parallelism=1, concurrency=1, release_after=release_after
    )
    for _ in range(3):  # one after another: glibc keeps the buffer for the next hash
        await hasher.hash("fills the heap")
    held = rss_mib()
    await asyncio.sleep(release_after + 0.5)
    print(held - rss_mib())

asyncio.run(main(float(sys.argv[1])))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim and /proc are Linux's")
@pytest.mark.parametrize("release_after", [0.2, 0.0])
def test_the_argon2_buffers_go_back_once_hashing_stops(release_after: float) -> None:
    """A new process, as the auth service is: its hashing thread's 19 MiB buffer goes back (or, with 0, stays)."""
    probe = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE, str(release_after)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    released = float(probe.stdout)
    if release_after:
        assert released > 15, f"only {released:.1f} MiB given back"
    else:
        assert released < 5, f"{released:.1f} MiB given back with release_after=0"


REUSE_PROBE = """
import asyncio, resource
from handlers.auth.passwords import PasswordHasher

async def main():
    hasher = PasswordHasher(time_cost=1, memory_cost=19_456, parallelism=1, concurrency=2, release_after=1.0)
    await asyncio.gather(*(hasher.hash("warm") for _ in range(4)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    await asyncio.gather(*(hasher.hash("a burst") for _ in range(120)))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (19_456 // 4))

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's heap and getrusage's page faults are Linux's")
def test_hashes_in_a_burst_reuse_their_buffers() -> None:
    """120 hashes, two at a time: the heap does not give buffers back mid-burst to fault them in again.

    Measured: about one buffer's worth of page faults over the burst with the fixed
    thresholds (one buffer placed anew once), 3 to 11 with glibc's sliding ones.
    """
    probe = subprocess.run(
        [sys.executable, "-c", REUSE_PROBE], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
    )
    buffers_faulted = float(probe.stdout)  # page faults over the burst / the 4 KiB pages of one buffer
    assert buffers_faulted < 2.5, f"{buffers_faulted:.1f} buffers' worth of page faults in one burst"
