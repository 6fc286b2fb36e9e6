"""What the gateway does to stay up when a downstream service is not: one policy per service.

A service is the first part of a command stream's name (``users`` for ``users.get``). Each
gets a :class:`Downstream`:

- a deadline per call (``GATEWAY_SERVICE_TIMEOUTS``, else ``BUS_REQUEST_TIMEOUT``);
- a circuit breaker (aiobreaker, state in memory) that opens after
  ``GATEWAY_BREAKER_FAIL_MAX`` consecutive failures and then refuses calls at once, without
  touching the bus, for ``GATEWAY_BREAKER_RESET_TIMEOUT`` seconds; then one probe passes
  (aiobreaker alone would let every concurrent call through) and closes or reopens it;
- a bulkhead: at most ``GATEWAY_MAX_IN_FLIGHT`` calls in progress, further ones refused;
- retries with exponential backoff and full jitter, for idempotent queries only: an
  attempt that may be retried waits ``GATEWAY_ATTEMPT_TIMEOUT`` at most, the last one what
  is left; all of them together never exceed the deadline.

A failure is a timeout or an ``unavailable`` / ``expired`` reply: the service did not
answer in time. A typed error reply (not_found, invalid_payload, email_taken, internal,
...) is an answer: it neither trips the breaker nor is retried.
"""

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener, CircuitBreakerState
from loguru import logger
from pydantic import BaseModel

from bus.correlation import correlated, current_correlation_id, new_id
from bus.rpc import BusClient, outcome_key
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from schemas import streams
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import AccountDeletion, Registration, RegistrationState

T = TypeVar("T")
ResultT = TypeVar("ResultT", bound=BaseModel)
SagaT = TypeVar("SagaT", Registration, AccountDeletion)

Attempt = Callable[[float], Awaitable[T]]
"""One try at a call, given the seconds it may take."""

FAILURES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.EXPIRED})
"""Error codes that mean the service did not answer in time: they trip breakers and are retried."""

IDEMPOTENT_STREAMS = frozenset(
    {
        streams.USERS_GET,
        streams.USERS_PING,
        streams.AUTH_JWKS,
        streams.AUTH_GET_REGISTRATION,
        streams.ACTIVITY_LIST,
        streams.AUTH_LIST_SESSIONS,
        streams.USERS_LIST,
    }
)
"""Commands that only read: sending one twice does no harm, so a failed one is tried again.

Add a new query here to have it retried; anything not listed is sent once.
"""

CIRCUIT_OPEN = "circuit_open"
BULKHEAD_FULL = "bulkhead_full"

_STATE_NAMES = {
    CircuitBreakerState.CLOSED: "closed",
    CircuitBreakerState.OPEN: "open",
    CircuitBreakerState.HALF_OPEN: "half_open",
}


def service_of(stream: str) -> str:
    """The service that consumes a command stream: ``users`` for ``users.get``."""
    return stream.partition(".")[0]


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the service did not answer (as opposed to answering with an error)."""
    return isinstance(exc, ReplyError) and not isinstance(exc, Refused) and exc.reply.code in FAILURES


class Refused(ReplyError):
    """The gateway refused a call itself, before the bus: 503 with ``Retry-After``."""

    def __init__(self, message: str, *, service: str, reason: str, retry_after: int) -> None:
        super().__init__(message, code=ErrorCode.UNAVAILABLE, extra={"service": service, "reason": reason})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Policy:
    """How the gateway treats calls to one service."""

    timeout: float
    attempt_timeout: float = 1.0
    retries: int = 2
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    fail_max: int = 5
    reset_timeout: float = 10.0
    max_in_flight: int = 256

    @classmethod
    def from_settings(cls, settings: GatewaySettings, service: str) -> "Policy":
        """The policy ``settings`` give ``service``."""
        return cls(
            timeout=settings.service_timeout(service),
            attempt_timeout=settings.attempt_timeout,
            retries=settings.retries,
            backoff_base=settings.retry_backoff_base,
            backoff_cap=settings.retry_backoff_cap,
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_timeout,
            max_in_flight=settings.max_in_flight,
        )

    def backoff(self, retry: int, jitter: float) -> float:
        """Seconds to wait before retry number ``retry`` (0-based), ``jitter`` in [0, 1): full jitter."""
        return jitter * min(self.backoff_cap, self.backoff_base * 2.0**retry)


class _StateListener(CircuitBreakerListener):  # type: ignore[misc]
    """aiobreaker's listeners are synchronous: this one only records and logs."""

    def __init__(self, downstream: "Downstream") -> None:
        self._downstream = downstream

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        del breaker, old
        self._downstream._state_changed(new.state)


class Downstream:
    """Deadline, breaker, bulkhead and retries for the calls to one service."""

    def __init__(
        self,
        service: str,
        policy: Policy,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.service = service
        self.policy = policy
        self._clock = clock
        self._jitter = jitter
        self._sleep = sleep
        self._in_flight = 0
        self._probing = False
        self._opened_at = -math.inf
        self._metrics = metrics
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._retries: dict[str, Any] = {}
        self.breaker = CircuitBreaker(
            fail_max=policy.fail_max,
            exclude=[lambda exc: not is_failure(exc)],
            listeners=[_StateListener(self)],
            name=service,
        )
        if metrics is not None:
            metrics.breaker_state.labels(service).state("closed")
            # Read when scraped: no gauge update (a lock each) on every call.
            metrics.in_flight.labels(service).set_function(lambda: self._in_flight)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        return _STATE_NAMES[self.breaker.current_state]

    @property
    def in_flight(self) -> int:
        """Calls to this service in progress."""
        return self._in_flight

    async def call(
        self,
        stream: str,
        attempt: Attempt[T],
        *,
        idempotent: bool,
        timeout: float | None = None,
        keeps_budget: bool = False,
    ) -> T:
        """Run ``attempt`` under this service's policy; raise ReplyError when it cannot.

        ``timeout`` overrides the policy's deadline for this call. ``keeps_budget``: the
        attempt gives up by itself once its budget is spent (``BusClient.request`` does),
        so no timer of the downstream's own bounds it: on uvloop one costs about 25 µs of
        the gateway's CPU per request (docs/performance.md).
        """
        self._admit(stream)
        if self._in_flight >= self.policy.max_in_flight:
            self._count(stream, BULKHEAD_FULL)
            raise Refused(
                f"The {self.service} service has too many requests in progress.",
                service=self.service,
                reason=BULKHEAD_FULL,
                retry_after=1,
            )
        self._in_flight += 1
        try:
            if current_correlation_id() is not None:
                return await self._attempts(stream, attempt, idempotent, timeout or self.policy.timeout, keeps_budget)
            # Outside a request (the key fetch at start): the attempts still share one id.
            with correlated(new_id()):
                return await self._attempts(stream, attempt, idempotent, timeout or self.policy.timeout, keeps_budget)
        finally:
            self._in_flight -= 1

    async def _attempts(
        self, stream: str, attempt: Attempt[T], idempotent: bool, timeout: float, keeps_budget: bool
    ) -> T:
        deadline = self._clock() + timeout
        tries = self.policy.retries + 1 if idempotent else 1
        for number in range(tries):
            remaining = deadline - self._clock()
            # An attempt that may be followed by another waits attempt_timeout at most; the
            # last one may use whatever is left of the deadline.
            budget = min(self.policy.attempt_timeout, remaining) if number + 1 < tries else remaining
            try:
                return await self._attempt(stream, attempt, budget, admitted=number == 0, keeps_budget=keeps_budget)
            except ReplyError as exc:
                delay = self.policy.backoff(number, self._jitter())
                if (
                    not is_failure(exc)
                    or number + 1 == tries
                    or deadline - self._clock() - delay <= 0
                    or self.breaker.current_state is not CircuitBreakerState.CLOSED
                ):
                    raise
                logger.info("retrying {} in {:.3f}s: {}", stream, delay, exc.reply.message)
                self._retried(stream)
                await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _admit(self, stream: str) -> None:
        """Refuse the call while the circuit is open; let one probe through once it may close."""
        state = self.breaker.current_state
        if state is CircuitBreakerState.CLOSED:
            return
        if state is CircuitBreakerState.OPEN:
            remaining = self._opened_at + self.policy.reset_timeout - self._clock()
            if remaining > 0:
                self._count(stream, CIRCUIT_OPEN)
                raise Refused(
                    f"The {self.service} service is unavailable.",
                    service=self.service,
                    reason=CIRCUIT_OPEN,
                    retry_after=max(1, math.ceil(remaining)),
                )
            self.breaker.half_open()
        if self._probing:  # half-open: one probe at a time, the others wait for its verdict
            self._count(stream, CIRCUIT_OPEN)
            raise Refused(
                f"The {self.service} service is unavailable.", service=self.service, reason=CIRCUIT_OPEN, retry_after=1
            )

    async def _attempt(
        self, stream: str, attempt: Attempt[T], budget: float, *, admitted: bool, keeps_budget: bool
    ) -> T:
        if not admitted:
            self._admit(stream)
        probe = self.breaker.current_state is CircuitBreakerState.HALF_OPEN
        if probe:
            self._probing = True
        started = self._clock()
        outcome = "ok"
        try:
            if keeps_budget:
                result: T = await self.breaker.call_async(attempt, budget)
            else:
                result = await self.breaker.call_async(self._bounded, attempt, budget)
            return result
        except CircuitBreakerError as exc:
            # The failure that opened the circuit: the caller hears of the failure itself.
            cause = exc.__cause__
            error = cause if isinstance(cause, ReplyError) else ReplyError(str(exc), code=ErrorCode.UNAVAILABLE)
            outcome = error.reply.code.value
            raise error from None
        except ReplyError as exc:
            outcome = exc.reply.code.value
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if probe:
                self._probing = False
            self._observe(stream, outcome, self._clock() - started)

    async def _bounded(self, attempt: Attempt[T], budget: float) -> T:
        try:
            async with asyncio.timeout(budget):
                return await attempt(budget)
        except TimeoutError:
            raise ReplyError(f"No reply from {self.service} within {budget:g}s.", code=ErrorCode.UNAVAILABLE) from None

    def _state_changed(self, state: CircuitBreakerState) -> None:
        name = _STATE_NAMES[state]
        if state is CircuitBreakerState.OPEN:
            self._opened_at = self._clock()
            logger.warning(
                "circuit for {} opened after {} failures; refusing calls for {:g}s",
                self.service,
                self.breaker.fail_counter,
                self.policy.reset_timeout,
                service_down=self.service,
            )
            if self._metrics is not None:
                self._metrics.breaker_opened.labels(self.service).inc()
        else:
            logger.info("circuit for {} is {}", self.service, name.replace("_", "-"), service_down=self.service)
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.service).state(name)

    def _count(self, stream: str, outcome: str) -> None:
        if self._metrics is None:
            return
        key = (stream, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self._metrics.bus_requests.labels(self.service, stream, outcome)
        child.inc()

    def _observe(self, stream: str, outcome: str, seconds: float) -> None:
        if self._metrics is None:
            return
        self._count(stream, outcome)
        child = self._durations.get(stream)
        if child is None:
            child = self._durations[stream] = self._metrics.bus_duration.labels(self.service, stream)
        child.observe(seconds)

    def _retried(self, stream: str) -> None:
        if self._metrics is None:
            return
        child = self._retries.get(stream)
        if child is None:
            child = self._retries[stream] = self._metrics.bus_retries.labels(self.service, stream)
        child.inc()


class Downstreams:
    """One :class:`Downstream` per service, made on first use."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics | None = None, **options: Any) -> None:
        """``options`` go to every Downstream (clock, jitter, sleep: for tests)."""
        self._settings = settings
        self._metrics = metrics
        self._options = options
        self._by_service: dict[str, Downstream] = {}
        for service in settings.ready_services:
            self.service(service)

    def service(self, service: str) -> Downstream:
        """The policy holder of ``service``."""
        found = self._by_service.get(service)
        if found is None:
            policy = Policy.from_settings(self._settings, service)
            found = self._by_service[service] = Downstream(service, policy, metrics=self._metrics, **self._options)
        return found

    def of(self, stream: str) -> Downstream:
        """The policy holder of the service that consumes ``stream``."""
        return self.service(service_of(stream))


class ResilientBusClient(BusClient):
    """The gateway's bus client: every ``request`` goes through its service's Downstream.

    Routes keep calling ``bus.request(...)``; a route that sends and waits itself (register)
    wraps that in ``bus.downstreams.of(stream).call(...)``.
    """

    def __init__(self, *args: Any, downstreams: Downstreams, **kwargs: Any) -> None:
        """As :class:`BusClient`, plus the per-service policies."""
        super().__init__(*args, **kwargs)
        self.downstreams = downstreams

    async def request(
        self,
        stream: str,
        command: BaseModel,
        result: type[ResultT],
        *,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> ResultT:
        """Send ``command`` and return its typed result, under its service's policy.

        ``idempotent`` (default: ``stream`` is in IDEMPOTENT_STREAMS) allows retries.
        """
        send = super().request

        async def attempt(budget: float) -> ResultT:
            return await send(stream, command, result, timeout=budget)

        retry = stream in IDEMPOTENT_STREAMS if idempotent is None else idempotent
        return await self.downstreams.of(stream).call(
            stream, attempt, idempotent=retry, timeout=timeout, keeps_budget=True
        )

    async def run_saga(self, stream: str, command: BaseModel, result: type[SagaT], *, wait: float, what: str) -> SagaT:
        """Start a saga with ``command`` (sent once: not idempotent); its state after at most ``wait`` seconds.

        The handler answers at once with the saga's state, and again (on the outcome key)
        when the saga ends. A saga still running after ``wait`` is returned pending, for
        the caller to answer 202 with its status URL.
        """
        message_id = new_id()
        producer = stream.partition(".")[0]
        reply = self.expect(message_id, producer=producer)
        outcome = self.expect(outcome_key(message_id), producer=producer)

        async def first_reply(timeout: float) -> SagaT:
            await self.send(stream, command, message_id=message_id, timeout=timeout)
            return await self.wait(reply, result, timeout=timeout, what=stream)

        try:
            # Under the service's breaker and bulkhead.
            state = await self.downstreams.of(stream).call(stream, first_reply, idempotent=False, keeps_budget=True)
            if state.state == RegistrationState.PENDING:
                try:
                    state = await self.wait(outcome, result, timeout=wait, what=what)
                except ReplyError as exc:
                    if exc.reply.code != ErrorCode.UNAVAILABLE:
                        raise
        finally:
            self.forget(message_id)
            self.forget(outcome_key(message_id))
        return state
