"""Strangler fig: the gateway proxies legacy routes to a stand-in monolith on a real loopback socket."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from pydantic import AnyHttpUrl, ValidationError

from bus.settings import BusSettings
from gateway.app import create_app
from gateway.legacy import RouteTableError, load_route_table, parse_route_table
from gateway.settings import GatewaySettings
from gateway.state import gateway_of
from tests.harness import eventually

pytestmark = pytest.mark.e2e


@dataclass
class Monolith:
    """A stand-in for the Node/Express app: records what reaches it, answers per path."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    release_stream: asyncio.Event = field(default_factory=asyncio.Event)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"],
                "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                "body": body,
            }
        )
        if scope["path"] == "/slow":
            await self.never.wait()
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first,", "more_body": True})
            # The rest only once the client has the first chunk: proof the gateway streams.
            await self.release_stream.wait()
            await send({"type": "http.response.body", "body": b"second", "more_body": False})
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"x-legacy", b"express"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-authenticate", b"Basic"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"legacy": true, "echo": "' + body + b'"}'})


@asynccontextmanager
async def serve(monolith: Monolith) -> AsyncIterator[Monolith]:
    """Serve ``monolith`` with uvicorn on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    monolith.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(monolith, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:

        async def started() -> bool:
            return server.started

        await eventually(started, what="the stand-in monolith to listen")
        yield monolith
    finally:
        monolith.never.set()
        monolith.release_stream.set()
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def monolith() -> AsyncIterator[Monolith]:
    """The stand-in monolith, listening."""
    async with serve(Monolith()) as running:
        yield running


@asynccontextmanager
async def gateway(redis_url: str, legacy_url: str, routes: Path, **options: Any) -> AsyncIterator[Litestar]:
    """A started gateway with a legacy upstream and a route file (no handlers needed)."""
    bus = BusSettings(redis_url=redis_url, prefix=f"test-{uuid.uuid4().hex[:10]}:")
    settings = GatewaySettings(
        environment="test", bus=bus, legacy_url=AnyHttpUrl(legacy_url), routes_file=routes, **options
    )
    app = create_app(settings)
    state = gateway_of(app.state)
    await state.start()
    try:
        yield app
    finally:
        await state.stop()


def client(app: Litestar) -> httpx.AsyncClient:
    """HTTP into ``app`` in this loop, as a client at 203.0.113.7."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="https://busway.example")


ROUTES = """
default = "legacy"

[[routes]]
method = ["GET", "PATCH"]
path = "/v1/users/me"
to = "bus"
"""


async def test_a_legacy_route_is_proxied_unchanged(redis_url: str, monolith: Monolith, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    async with gateway(redis_url, monolith.url, routes) as app, client(app) as http:
        response = await http.post(
            "/api/users/42?sort=name&x=%2F",
            content=b"hello",
            headers={
                "Authorization": "Bearer legacy-jwt",
                "X-Custom": "kept",
                "X-Request-ID": "req-legacy-1",
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "drop me",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Upgrade": "websocket",
                "Proxy-Authorization": "Basic abc",
                "X-Forwarded-For": "198.51.100.1",
            },
        )
    assert response.status_code == 201
    assert response.json() == {"legacy": True, "echo": "hello"}
    assert response.headers["x-legacy"] == "express"
    assert response.headers["x-request-id"] == "req-legacy-1"
    assert "keep-alive" not in response.headers
    assert "proxy-authenticate" not in response.headers
    [seen] = monolith.seen
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
        "POST",
        "/api/users/42",
        b"sort=name&x=%2F",
        b"hello",
    )
    headers = seen["headers"]
    assert headers["authorization"] == "Bearer legacy-jwt"
    assert headers["x-custom"] == "kept"
    assert headers["x-request-id"] == "req-legacy-1"
    assert headers["x-forwarded-for"] == "198.51.100.1, 203.0.113.7"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "busway.example"
    for hop in ("x-secret-hop", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert hop not in headers, hop


async def test_a_bus_route_is_served_by_busway(redis_url: str, monolith: Monolith, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    async with gateway(redis_url, monolith.url, routes) as app, client(app) as http:
        me = await http.get("/v1/users/me")
        health = await http.get("/health")
    # busway's own answer: no token, a problem; and its own health route.
    assert me.status_code == 401
    assert me.headers["content-type"].startswith("application/problem+json")
    assert health.status_code == 200
    assert monolith.seen == []


async def test_the_response_body_streams_through(redis_url: str, monolith: Monolith, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    async with gateway(redis_url, monolith.url, routes) as app:
        sent: list[dict[str, Any]] = []
        first_chunk = asyncio.Event()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                first_chunk.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/stream",
            "raw_path": b"/stream",
            "query_string": b"",
            "headers": [(b"host", b"busway.test")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        call = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        # The monolith holds back its second chunk until the first reached our client.
        await asyncio.wait_for(first_chunk.wait(), timeout=10)
        assert not call.done()
        monolith.release_stream.set()
        await asyncio.wait_for(call, timeout=10)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert b"".join(bodies) == b"first,second"
    assert bodies[0] == b"first,"
    assert sent[0]["status"] == 200


async def test_a_slow_monolith_is_a_504(redis_url: str, monolith: Monolith, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    async with gateway(redis_url, monolith.url, routes, legacy_timeout=0.3) as app, client(app) as http:
        response = await http.get("/slow")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 504
    assert body["correlation_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


async def test_a_monolith_that_is_down_is_a_502(redis_url: str, tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    async with gateway(redis_url, closed, routes) as app, client(app) as http:
        response = await http.get("/api/anything")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "The legacy service is unavailable."


async def test_a_route_switches_by_editing_the_file(redis_url: str, monolith: Monolith, tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text('{"default": "legacy", "routes": []}')
    async with gateway(redis_url, monolith.url, routes) as app, client(app) as http:
        before = await http.get("/v1/users/me")
    assert before.status_code == 201  # the monolith's answer
    routes.write_text('{"default": "legacy", "routes": [{"method": "GET", "path": "/v1/users/{id}", "to": "bus"}]}')
    # Read again at start: a restart switches the route, no code changed.
    async with gateway(redis_url, monolith.url, routes) as app, client(app) as http:
        after = await http.get("/v1/users/me")
        still_legacy = await http.delete("/v1/users/me")
    assert after.status_code == 401  # busway's answer
    assert still_legacy.status_code == 201
    assert [seen["method"] for seen in monolith.seen] == ["GET", "DELETE"]


def test_a_bad_route_file_is_one_clear_error(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[routes]]\npath = "/v1/users"\nto = "elsewhere"\n')
    with pytest.raises(RouteTableError, match=r"routes\[0\]\.to: expected 'bus' or 'legacy'"):
        load_route_table(routes)
    with pytest.raises(ValidationError, match="expected 'bus' or 'legacy'"):
        GatewaySettings(environment="test", legacy_url=AnyHttpUrl("http://127.0.0.1:3000"), routes_file=routes)
    with pytest.raises(ValidationError, match="GATEWAY_LEGACY_URL is not"):
        GatewaySettings(environment="test", routes_file=routes)


def test_path_patterns() -> None:
    table = load_route_table(None)
    assert table.target("GET", "/health") == "bus"
    assert table.target("GET", "/api/users") == "legacy"

    table = parse_route_table(
        {
            "default": "bus",
            "routes": [
                {"path": "/api/**", "to": "legacy"},
                {"method": "GET", "path": "/v1/users/*/avatar", "to": "legacy"},
            ],
        }
    )
    assert table.target("POST", "/api/login") == "legacy"
    assert table.target("GET", "/api") == "legacy"
    assert table.target("GET", "/apix") == "bus"
    assert table.target("GET", "/v1/users/42/avatar") == "legacy"
    assert table.target("PUT", "/v1/users/42/avatar") == "bus"
    assert table.target("GET", "/v1/users/42/avatar/x") == "bus"
