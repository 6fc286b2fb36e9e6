"""A served process freezes its heap once started: the garbage collector no longer walks its start-up objects."""

import asyncio
import gc
import os
import signal

from bus.process import freeze_heap
from bus.runtime import serve


def test_freezing_keeps_what_lives_now_out_of_collections_and_still_collects_later_cycles() -> None:
    try:
        kept = [object() for _ in range(100)]
        freeze_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)

        cycle: list[object] = []
        cycle.append(cycle)  # garbage made after the freeze, reachable only from itself
        del cycle
        assert gc.collect() >= 1
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


async def test_serve_freezes_the_heap_after_the_start_and_before_the_work() -> None:
    seen: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    class Runtime:
        async def start(self) -> None:
            seen["at start"] = gc.get_freeze_count()
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)  # then stop, as an orchestrator would

        async def stop(self) -> None:
            seen["at stop"] = gc.get_freeze_count()

    try:
        gc.unfreeze()
        await asyncio.wait_for(serve(Runtime()), 5)  # type: ignore[arg-type]  # a stand-in runtime
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        gc.unfreeze()
    assert seen["at start"] == 0
    assert seen["at stop"] > 0
