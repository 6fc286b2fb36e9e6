"""The gateway's Prometheus metrics: HTTP requests, bus calls per service, breakers, bulkheads.

One registry per gateway (not prometheus_client's global one), so several gateways in one
process (the test harness) keep their numbers apart. ``GET /metrics`` serves it.
"""

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from bus.metrics import CONTENT_TYPE, quiet_created_series

MEDIA_TYPE = CONTENT_TYPE.removesuffix("; charset=utf-8")
"""The Prometheus text format's media type; Litestar appends the charset itself."""

BREAKER_STATES = ["closed", "open", "half_open"]
UNMATCHED = "unmatched"
"""The route label of a request no route matched (404, 405): keeps the label set bounded."""

__all__ = ["BREAKER_STATES", "MEDIA_TYPE", "UNMATCHED", "GatewayMetrics"]


class GatewayMetrics:
    """Every series the gateway exports, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        quiet_created_series()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "busway_http_requests",
            "HTTP requests answered, by route template.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "busway_http_request_duration_seconds", "Time to answer an HTTP request.", ["method", "route"], registry=r
        )
        self.bus_requests = Counter(
            "busway_bus_requests",
            "Calls to a downstream service: each attempt's outcome (ok, an error code), or why it was refused "
            "before reaching the bus (circuit_open, bulkhead_full).",
            ["service", "stream", "outcome"],
            registry=r,
        )
        self.bus_duration = Histogram(
            "busway_bus_request_duration_seconds",
            "Time from sending a command to its reply, per attempt.",
            ["service", "stream"],
            registry=r,
        )
        self.bus_retries = Counter(
            "busway_bus_retries", "Attempts of idempotent queries made again.", ["service", "stream"], registry=r
        )
        self.breaker_state = Enum(
            "busway_circuit_breaker_state", "Each service's circuit.", ["service"], states=BREAKER_STATES, registry=r
        )
        self.breaker_opened = Counter(
            "busway_circuit_breaker_opened", "Times a service's circuit opened.", ["service"], registry=r
        )
        self.in_flight = Gauge("busway_bus_in_flight", "Calls in progress per service.", ["service"], registry=r)
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
