"""new_id: 128 random bits in 32 hex digits, never the same twice, not even across a fork;
correlated: the id and log fields of the work in progress, per task, nested."""

import asyncio
import os
import re
import threading
from typing import Any

import pytest
from loguru import logger

from bus.correlation import correlated, current_correlation_id, log_fields, new_id
from bus.logs import configure_logging


def test_ids_are_32_hex_digits_and_distinct_across_many_refills() -> None:
    ids = [new_id() for _ in range(5000)]  # about twenty reads of the operating system's randomness

    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_sharing_the_ids_never_get_the_same_one() -> None:
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        into.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [i for ids in taken for i in ids]
    assert len(set(every)) == len(every) == 8000


def test_a_forked_child_does_not_hand_out_the_ids_its_parent_holds() -> None:
    new_id()  # the parent now holds unused ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(10)]

    child_ids = [child[i : i + 32] for i in range(0, len(child), 32)]
    assert len(child_ids) == 10
    assert not set(child_ids) & set(parent)


def test_correlated_binds_the_id_and_fields_and_an_inner_block_adds_to_and_wins_over_them() -> None:
    assert current_correlation_id() is None
    assert log_fields() == {}
    with correlated("outer", service="gateway", route="/a") as bound:
        assert bound == "outer"
        with correlated("inner", route="/b", message_id="m-1"):
            assert current_correlation_id() == "inner"
            assert log_fields() == {"correlation_id": "inner", "service": "gateway", "route": "/b", "message_id": "m-1"}
        assert current_correlation_id() == "outer"
        assert log_fields() == {"correlation_id": "outer", "service": "gateway", "route": "/a"}
    assert current_correlation_id() is None
    assert log_fields() == {}


def test_correlated_is_undone_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), correlated("failing", service="users"):
        raise RuntimeError
    assert current_correlation_id() is None
    assert log_fields() == {}


async def test_each_task_keeps_its_own_correlation() -> None:
    seen: dict[str, tuple[str | None, object]] = {}

    async def work(name: str) -> None:
        with correlated(f"id-{name}", message_id=name):
            await asyncio.sleep(0.01)  # the other tasks bind theirs meanwhile
            seen[name] = (current_correlation_id(), log_fields()["message_id"])

    await asyncio.gather(*(work(name) for name in "abc"))
    assert seen == {name: (f"id-{name}", name) for name in "abc"}


def test_every_written_line_gets_the_fields_of_its_block() -> None:
    configure_logging("tests", "text", "WARNING")  # as the tests' session does: the patcher is in place
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        logger.info("outside")
        with correlated("corr-9", message_id="m-9", type="Ping"):
            logger.info("inside", outcome="ok")
            logger.bind(type="bound").info("bound and passed", message_id="passed")
    finally:
        logger.remove(sink)
    outside, inside, own = (record["extra"] for record in records)
    assert outside["correlation_id"] == "-"
    assert "message_id" not in outside
    assert inside["correlation_id"] == "corr-9"
    assert inside["message_id"] == "m-9"
    assert inside["outcome"] == "ok"
    assert inside["service"] == "tests"
    # What a line binds or passes itself wins over its block's fields, as with contextualize.
    assert own["message_id"] == "passed"
    assert own["type"] == "bound"
    assert own["correlation_id"] == "corr-9"
