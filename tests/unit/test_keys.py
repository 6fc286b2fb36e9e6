"""Signing keys from a folder: rotation adds the newest signer, reload picks it up, retire removes old ones."""

import asyncio
from pathlib import Path

import jwt
import pytest

from handlers.auth.keys import KeyFolderWatcher, KeyRing, RetireRefused, key_files, retire_key, write_new_key


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_a_reload_makes_the_new_key_sign_and_keeps_the_old_one_published(tmp_path: Path) -> None:
    ring = KeyRing.load(None, tmp_path, generate=True)
    old = ring.current.kid
    assert ring.reload() is False  # nothing changed

    write_new_key(tmp_path)
    assert ring.reload() is True

    signed, _ = ring.sign({"sub": "u1"}, 60)
    assert kid_of(signed) == ring.current.kid != old
    assert [key["kid"] for key in ring.jwks()] == [ring.current.kid, old]  # newest first


def test_a_new_key_sorts_last_even_within_the_same_second(tmp_path: Path) -> None:
    written = [write_new_key(tmp_path) for _ in range(5)]
    assert key_files(tmp_path) == written
    assert not list(tmp_path.glob(".*"))  # no partial file left behind


def test_a_broken_file_or_an_empty_folder_keeps_the_current_keys(tmp_path: Path) -> None:
    ring = KeyRing.load(None, tmp_path, generate=True)
    kid = ring.current.kid
    (tmp_path / "zz-broken.pem").write_text("not a key")
    assert ring.reload() is False
    assert ring.current.kid == kid
    for path in key_files(tmp_path):
        path.unlink()
    assert ring.reload() is False
    assert ring.current.kid == kid


def test_retire_deletes_an_old_key_but_never_the_signing_one(tmp_path: Path) -> None:
    ring = KeyRing.load(None, tmp_path, generate=True)
    old = ring.current.kid
    write_new_key(tmp_path)
    ring.reload()
    new = ring.current.kid
    with pytest.raises(RetireRefused, match="newest"):
        retire_key(tmp_path, new)
    with pytest.raises(RetireRefused, match="no signing key 'nope'"):
        retire_key(tmp_path, "nope")
    retire_key(tmp_path, old)
    ring.reload()
    assert ring.kids == [new]


def test_a_fixed_key_is_never_reloaded(tmp_path: Path) -> None:
    pem = write_new_key(tmp_path).read_text()
    ring = KeyRing.load(pem, tmp_path, generate=False)
    write_new_key(tmp_path)
    assert ring.reload() is False
    assert ring.folder is None


async def test_the_watcher_picks_up_a_rotation_while_running(tmp_path: Path) -> None:
    ring = KeyRing.load(None, tmp_path, generate=True)
    old = ring.current.kid
    watcher = KeyFolderWatcher(ring, interval=0.05)
    await watcher.start()
    try:
        write_new_key(tmp_path)
        for _ in range(200):
            if ring.current.kid != old:
                break
            await asyncio.sleep(0.05)
        assert ring.current.kid != old
        assert len(ring.kids) == 2
    finally:
        await watcher.stop()
