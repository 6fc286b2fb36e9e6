"""Password hashing: argon2 by default, monolith bcrypt hashes accepted and upgraded."""

import bcrypt

from handlers.auth.passwords import PasswordHasher

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
