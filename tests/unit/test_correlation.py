"""new_id: 128 random bits in 32 hex digits, never the same twice, not even across a fork."""

import os
import re
import threading

from bus.correlation import new_id


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
