"""The gateway's own HTTP layer alone: CPU per ``GET /v1/ping`` with the bus answering at once.

``uv run just bench-gateway [--requests N] [--rounds R]`` calls the real gateway app
(request ids, logs, metrics, Litestar's routing and dependency injection, the resilience
layer with its breaker and bulkhead) in this process through ASGI, no server and no
socket, with ``BusClient.request`` answering a Pong at once, and beside it a bare
Litestar route answering the same Pong (the monolith's share of the same work). Rounds
alternate, so the machine's noise falls on both alike; the least CPU per request of the
rounds is the steadiest figure. It needs Redis: the gateway connects its inbox at start.
"""

import argparse
import time
from typing import Any, cast
from unittest import mock

import uvloop
from litestar import Litestar, get
from litestar.types import ASGIApp, Message, Receive, Scope

from bus.logs import configure_logging
from bus.rpc import BusClient
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from schemas.replies import Pong

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/v1/ping",
    "raw_path": b"/v1/ping",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def _answered(self: BusClient, stream: str, command: Any, result: type[Any], **options: Any) -> Any:
    """The bus's reply, at once: what is left to measure is the gateway around it."""
    return Pong(service="users")


def bare() -> Litestar:
    """The monolith's route: the same Pong from a handler of its own."""

    @get("/v1/ping")
    async def ping() -> Pong:
        return Pong(service="users")

    return Litestar([ping], logging_config=None)


async def cpu_per_request(app: ASGIApp, requests: int) -> float:
    """µs of this process's CPU per request, over ``requests`` calls of ``app``."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(requests):
        await app(cast("Scope", {**_SCOPE, "state": {}}), cast("Receive", receive), send)
    spent = time.process_time() - started
    if statuses != [200] * requests:
        raise SystemExit(f"bench: {len(statuses) - statuses.count(200)} answers were not 200")
    return spent / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    gateway_app = create_app(GatewaySettings(_env_file=None))
    gateway: Gateway = gateway_app.state["gateway"]
    await gateway.start()
    apps: dict[str, ASGIApp] = {"bare Litestar route": bare(), "gateway": gateway_app}
    figures: dict[str, list[float]] = {name: [] for name in apps}
    try:
        with mock.patch.object(BusClient, "request", _answered):
            for app in apps.values():  # warm-up
                await cpu_per_request(app, max(1, args.requests // 10))
            for number in range(1, args.rounds + 1):
                for name, app in apps.items():
                    figures[name].append(await cpu_per_request(app, args.requests))
                line = ", ".join(f"{name} {values[-1]:5.1f} µs" for name, values in figures.items())
                print(f"round {number}: CPU per request: {line}", flush=True)
    finally:
        await gateway.stop()
    print("least of the rounds: " + ", ".join(f"{name} {min(v):5.1f} µs" for name, v in figures.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per app and round")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    if arguments.requests < 1 or arguments.rounds < 1:
        parser.error("--requests and --rounds must be positive")
    configure_logging("gateway", "text", "WARNING")
    uvloop.run(main(arguments))
