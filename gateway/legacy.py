"""Strangler fig: a route table decides, route by route, whether busway or the monolith answers.

The table is a TOML or JSON file (``GATEWAY_ROUTES_FILE``), read when the gateway starts::

    default = "legacy"          # a request no rule matches; "legacy" unless said otherwise

    [[routes]]
    method = "POST"             # or "*" (the default), or a list: ["GET", "HEAD"]
    path = "/v1/auth/login"     # {name} and * match one segment, a final /** the rest
    to = "bus"

The first matching rule wins. Requests for the legacy upstream (``GATEWAY_LEGACY_URL``) go
through unchanged (method, path, query, headers, body, status, a streamed body both ways),
minus the hop-by-hop headers, plus X-Forwarded-For/-Proto/-Host and the X-Request-ID.
A timeout is a 504 and an unreachable monolith a 502, both problem+json.
"""

import json
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send
from loguru import logger

from bus.correlation import current_correlation_id

Target = Literal["bus", "legacy"]
TARGETS: tuple[Target, ...] = ("bus", "legacy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
    }
)
"""Headers of one connection, never forwarded (RFC 9110 7.6.1), with any the Connection header names."""

OWN_ROUTES: tuple[tuple[str, Target], ...] = (
    ("/health", "bus"),
    ("/ready", "bus"),
    ("/metrics", "bus"),
    ("/schema/**", "bus"),
    ("/schema", "bus"),
)
"""The gateway's own operations routes: served by busway unless a rule says otherwise."""


class RouteTableError(ValueError):
    """The route file cannot be read or does not describe a route table."""


def _pattern(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        msg = f"path {path!r} must start with /"
        raise RouteTableError(msg)
    parts = path.strip("/").split("/") if path != "/" else []
    regex = ""
    for index, part in enumerate(parts):
        if part == "**" and index == len(parts) - 1:
            regex += "(?:/.*)?"
        elif part == "*" or re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", part):
            regex += "/[^/]+"
        elif "*" in part or "{" in part or "}" in part:
            msg = f"path {path!r}: a segment is literal, *, {{name}}, or a final **"
            raise RouteTableError(msg)
        else:
            regex += "/" + re.escape(part)
    return re.compile(regex + "/?" if regex else "/")


@dataclass(frozen=True)
class RouteRule:
    """Requests with one of ``methods`` (empty: any) on a path matching ``path`` go to ``to``."""

    methods: frozenset[str]
    path: str
    to: Target
    regex: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule covers ``method`` on ``path``."""
        return (not self.methods or method in self.methods) and self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class RouteTable:
    """Where each request goes: the first matching rule, else ``default``."""

    rules: tuple[RouteRule, ...] = ()
    default: Target = "legacy"

    def target(self, method: str, path: str) -> Target:
        """``bus`` or ``legacy`` for ``method`` on ``path``."""
        for rule in self.rules:
            if rule.matches(method, path):
                return rule.to
        return self.default


def _target(value: Any, where: str) -> Target:
    if value not in TARGETS:
        msg = f"{where}: expected 'bus' or 'legacy', got {value!r}"
        raise RouteTableError(msg)
    result: Target = value
    return result


def _rule(raw: Any, index: int) -> RouteRule:
    where = f"routes[{index}]"
    if not isinstance(raw, dict):
        msg = f"{where}: expected a table with method, path and to"
        raise RouteTableError(msg)
    unknown = set(raw) - {"method", "path", "to"}
    if unknown:
        msg = f"{where}: unknown keys {', '.join(sorted(unknown))}"
        raise RouteTableError(msg)
    path = raw.get("path")
    if not isinstance(path, str):
        msg = f"{where}: path is required (a string such as /v1/users/{{id}})"
        raise RouteTableError(msg)
    method = raw.get("method", "*")
    methods = [method] if isinstance(method, str) else method
    if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
        msg = f"{where}: method is a string or a list of strings"
        raise RouteTableError(msg)
    names = frozenset(m.upper() for m in methods)
    try:
        regex = _pattern(path)
    except RouteTableError as exc:
        msg = f"{where}: {exc}"
        raise RouteTableError(msg) from None
    return RouteRule(frozenset() if "*" in names else names, path, _target(raw.get("to"), f"{where}.to"), regex)


def parse_route_table(data: Any) -> RouteTable:
    """A route table from parsed TOML or JSON."""
    if not isinstance(data, dict):
        msg = "expected a table with 'default' and 'routes'"
        raise RouteTableError(msg)
    unknown = set(data) - {"default", "routes"}
    if unknown:
        msg = f"unknown keys {', '.join(sorted(unknown))}"
        raise RouteTableError(msg)
    routes = data.get("routes", [])
    if not isinstance(routes, list):
        msg = "routes: expected a list of rules"
        raise RouteTableError(msg)
    rules = [_rule(raw, index) for index, raw in enumerate(routes)]
    rules += [RouteRule(frozenset(), path, to, _pattern(path)) for path, to in OWN_ROUTES]
    return RouteTable(tuple(rules), _target(data.get("default", "legacy"), "default"))


def load_route_table(path: Path | None) -> RouteTable:
    """The route table in ``path`` (.toml or .json); without a file, everything unknown is legacy."""
    if path is None:
        return parse_route_table({})
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise RouteTableError(msg) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
        raise RouteTableError(msg) from None
    try:
        return parse_route_table(data)
    except RouteTableError as exc:
        msg = f"{path}: {exc}"
        raise RouteTableError(msg) from None


def _problem(status: int, title: str, detail: str, path: str) -> bytes:
    return json.dumps(
        {
            "type": f"/problems/{'legacy-timeout' if status == 504 else 'legacy-unavailable'}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
            "correlation_id": current_correlation_id(),
        }
    ).encode()


class LegacyProxy:
    """Sends the requests the route table gives to ``legacy`` to the monolith, streaming both ways."""

    def __init__(self, url: str, table: RouteTable, *, timeout: float, connect_timeout: float) -> None:
        self.url = httpx.URL(url)
        self.table = table
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client: httpx.AsyncClient | None = None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` answers what the table gives to the bus; the monolith everything else."""

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and self.table.target(scope["method"], scope["path"]) == "legacy":
                scope["path_template"] = "legacy"
                await self.forward(scope, receive, send)
                return
            await app(scope, receive, send)

        return route

    def _http(self) -> httpx.AsyncClient:
        # Made on first use, inside the server's event loop; closed by ``close``.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False)
        return self._client

    async def close(self) -> None:
        """Close the upstream connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _target_url(self, scope: HTTPScope) -> httpx.URL:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        base = self.url.raw_path.split(b"?", 1)[0].rstrip(b"/")
        query: bytes = scope.get("query_string", b"")
        return self.url.copy_with(raw_path=base + raw_path + (b"?" + query if query else b""))

    def _request_headers(self, scope: HTTPScope) -> list[tuple[bytes, bytes]]:
        incoming: list[tuple[bytes, bytes]] = list(scope["headers"])
        named = {
            token.strip().lower()
            for name, value in incoming
            if name.lower() == b"connection"
            for token in value.decode("latin-1").split(",")
        }
        drop = HOP_BY_HOP | named | {"host", "x-request-id", "x-forwarded-proto", "x-forwarded-host"}
        headers = [(k, v) for k, v in incoming if k.decode("latin-1").lower() not in drop]
        host = next((v for k, v in incoming if k.lower() == b"host"), b"")
        client = scope.get("client")
        forwarded_for = ", ".join(
            [v.decode("latin-1") for k, v in incoming if k.lower() == b"x-forwarded-for"]
            + ([client[0]] if client else [])
        )
        headers = [(k, v) for k, v in headers if k.lower() != b"x-forwarded-for"]
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for.encode("latin-1")))
        headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
        if host:
            headers.append((b"x-forwarded-host", host))
        request_id = current_correlation_id()
        if request_id:
            headers.append((b"x-request-id", request_id.encode()))
        return headers

    async def forward(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """Proxy one request to the monolith and its response back."""
        headers = self._request_headers(scope)
        has_body = any(k.lower() in {b"content-length", b"transfer-encoding"} for k, _ in scope["headers"])

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if isinstance(chunk, bytes) and chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        client = self._http()
        request = client.build_request(
            scope["method"], self._target_url(scope), headers=headers, content=body() if has_body else None
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            logger.warning("legacy upstream timed out on {} {}", scope["method"], scope["path"])
            await self._send_problem(send, 504, "Gateway Timeout", "The legacy service did not answer in time.", scope)
            return
        except httpx.TransportError as exc:
            logger.warning("legacy upstream unreachable on {} {}: {!r}", scope["method"], scope["path"], exc)
            await self._send_problem(send, 502, "Bad Gateway", "The legacy service is unavailable.", scope)
            return
        try:
            named = {token.strip().lower() for token in response.headers.get_list("connection", split_commas=True)}
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP | named
                    ],
                }
            )
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError as exc:
                # The status is out already: cut the connection so the client sees a truncated body.
                logger.warning(
                    "legacy upstream failed mid-response on {} {}: {!r}", scope["method"], scope["path"], exc
                )
                raise ConnectionAbortedError("legacy upstream failed mid-response") from None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    @staticmethod
    async def _send_problem(send: Send, status: int, title: str, detail: str, scope: HTTPScope) -> None:
        body = _problem(status, title, detail, scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
