"""The gateway's per-service policy with fakes: breaker, bulkhead, retries, deadlines."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from bus.correlation import correlated, current_correlation_id
from gateway.metrics import GatewayMetrics
from gateway.resilience import BULKHEAD_FULL, CIRCUIT_OPEN, Downstream, Downstreams, Policy, Refused, service_of
from gateway.settings import GatewaySettings
from schemas.errors import ErrorCode, ReplyError


@dataclass
class Clock:
    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Service:
    """A fake downstream: fails with the codes given, then answers "ok"."""

    failures: list[ErrorCode] = field(default_factory=list)
    budgets: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None

    @property
    def calls(self) -> int:
        return len(self.budgets)

    async def __call__(self, budget: float) -> str:
        self.budgets.append(budget)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            code = self.failures.pop(0)
            raise ReplyError(f"failed with {code}", code=code)
        return "ok"


def downstream(clock: Clock, metrics: GatewayMetrics | None = None, **policy: float) -> Downstream:
    options = {"timeout": 5.0, "fail_max": 3, "reset_timeout": 10.0, "retries": 0, **policy}
    return Downstream(
        "users",
        Policy(**options),  # type: ignore[arg-type]
        metrics=metrics,
        clock=clock,
        jitter=lambda: 0.5,
        sleep=clock.sleep,
    )


async def fail(guard: Downstream, service: Service, times: int, code: ErrorCode = ErrorCode.UNAVAILABLE) -> None:
    for _ in range(times):
        service.failures.append(code)
        with pytest.raises(ReplyError) as caught:
            await guard.call("users.get", service, idempotent=False)
        assert caught.value.reply.code == code
        assert not isinstance(caught.value, Refused)


async def refused(call: Callable[[], Awaitable[object]]) -> Refused:
    with pytest.raises(Refused) as caught:
        await call()
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    return caught.value


def test_the_service_is_the_first_part_of_the_stream_name() -> None:
    assert service_of("users.get") == "users"
    assert service_of("auth.get_registration") == "auth"


async def test_the_breaker_opens_after_fail_max_failures_and_then_refuses_without_calling() -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 2)
    assert guard.state == "closed"
    await fail(guard, service, 1)
    assert guard.state == "open"
    calls = service.calls

    rejection = await refused(lambda: guard.call("users.get", service, idempotent=True))
    assert service.calls == calls
    assert rejection.retry_after == 10
    assert rejection.reply.extra == {"service": "users", "reason": CIRCUIT_OPEN}

    clock.now += 7.5
    assert (await refused(lambda: guard.call("users.get", service, idempotent=False))).retry_after == 3
    assert service.calls == calls


async def test_after_the_reset_timeout_one_probe_passes_and_its_success_closes_the_circuit() -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 3)
    clock.now += 10.0

    service.gate = asyncio.Event()
    probe = asyncio.create_task(guard.call("users.get", service, idempotent=False))
    await asyncio.sleep(0)
    assert guard.state == "half_open"
    assert service.calls == 4
    # aiobreaker alone would let this one through too.
    second = await refused(lambda: guard.call("users.get", service, idempotent=False))
    assert second.retry_after == 1
    assert service.calls == 4

    service.gate.set()
    assert await probe == "ok"
    assert guard.state == "closed"
    assert await guard.call("users.get", service, idempotent=False) == "ok"


async def test_a_failed_probe_opens_the_circuit_again_for_a_full_reset_timeout() -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 3)
    clock.now += 11.0
    await fail(guard, service, 1)
    assert guard.state == "open"
    assert (await refused(lambda: guard.call("users.get", service, idempotent=False))).retry_after == 10


async def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 3)
    clock.now += 10.0
    service.gate = gate = asyncio.Event()
    probe = asyncio.create_task(guard.call("users.get", service, idempotent=False))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    gate.set()
    assert await guard.call("users.get", service, idempotent=False) == "ok"
    assert guard.state == "closed"


@pytest.mark.parametrize(
    "code",
    [ErrorCode.NOT_FOUND, ErrorCode.INVALID_PAYLOAD, ErrorCode.EMAIL_TAKEN, ErrorCode.FORBIDDEN, ErrorCode.INTERNAL],
)
async def test_typed_error_replies_are_answers_and_never_trip_the_breaker(code: ErrorCode) -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 10, code)
    assert guard.state == "closed"
    # An answer also ends a run of failures: they must be consecutive to open the circuit.
    await fail(guard, service, 2)
    await fail(guard, service, 1, code)
    await fail(guard, service, 2)
    assert guard.state == "closed"


async def test_a_typed_answer_to_the_probe_closes_the_circuit() -> None:
    clock, service = Clock(), Service()
    guard = downstream(clock)
    await fail(guard, service, 3)
    clock.now += 10.0
    await fail(guard, service, 1, ErrorCode.NOT_FOUND)
    assert guard.state == "closed"


async def test_the_bulkhead_refuses_calls_beyond_max_in_flight_and_spares_other_services() -> None:
    clock = Clock()
    users = downstream(clock, max_in_flight=2)
    gate = asyncio.Event()
    slow = Service(gate=gate)
    held = [asyncio.create_task(users.call("users.get", slow, idempotent=False)) for _ in range(2)]
    await asyncio.sleep(0)
    assert users.in_flight == 2

    full = await refused(lambda: users.call("users.get", Service(), idempotent=False))
    assert full.retry_after == 1
    assert full.reply.extra == {"service": "users", "reason": BULKHEAD_FULL}
    auth = Downstreams(GatewaySettings(max_in_flight=2, _env_file=None)).service("auth")
    assert await auth.call("auth.jwks", Service(), idempotent=False) == "ok"

    gate.set()
    assert await asyncio.gather(*held) == ["ok", "ok"]
    assert users.in_flight == 0
    assert await users.call("users.get", Service(), idempotent=False) == "ok"
    assert users.state == "closed"  # a full bulkhead is not the service's failure


async def test_an_idempotent_query_is_retried_with_exponential_backoff_and_jitter() -> None:
    clock = Clock()
    guard = downstream(clock, retries=3, backoff_base=0.1, backoff_cap=1.0, fail_max=10)
    service = Service(failures=[ErrorCode.UNAVAILABLE, ErrorCode.EXPIRED, ErrorCode.UNAVAILABLE])
    assert await guard.call("users.get", service, idempotent=True) == "ok"
    assert service.calls == 4
    # jitter() is 0.5 here: half of 0.1, 0.2, 0.4.
    assert clock.slept == pytest.approx([0.05, 0.1, 0.2])


async def test_retries_stop_after_the_last_attempt() -> None:
    clock = Clock()
    guard = downstream(clock, retries=2, fail_max=10)
    service = Service(failures=[ErrorCode.UNAVAILABLE] * 5)
    with pytest.raises(ReplyError) as caught:
        await guard.call("users.get", service, idempotent=True)
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert service.calls == 3


async def test_a_command_that_is_not_idempotent_is_sent_once() -> None:
    clock = Clock()
    guard = downstream(clock, retries=3, fail_max=10)
    service = Service(failures=[ErrorCode.UNAVAILABLE])
    with pytest.raises(ReplyError):
        await guard.call("users.update", service, idempotent=False)
    assert service.calls == 1
    assert clock.slept == []


async def test_a_typed_error_is_not_retried() -> None:
    clock = Clock()
    guard = downstream(clock, retries=3)
    service = Service(failures=[ErrorCode.NOT_FOUND])
    with pytest.raises(ReplyError) as caught:
        await guard.call("users.get", service, idempotent=True)
    assert caught.value.reply.code == ErrorCode.NOT_FOUND
    assert service.calls == 1


async def test_retries_stop_when_the_breaker_opens() -> None:
    clock = Clock()
    guard = downstream(clock, retries=5, fail_max=2)
    service = Service(failures=[ErrorCode.UNAVAILABLE] * 5)
    with pytest.raises(ReplyError) as caught:
        await guard.call("users.get", service, idempotent=True)
    assert not isinstance(caught.value, Refused)  # the caller hears of the failure itself
    assert service.calls == 2
    assert guard.state == "open"


async def test_each_attempt_gets_its_share_of_the_deadline_and_none_starts_past_it() -> None:
    clock = Clock()
    guard = downstream(clock, timeout=2.5, attempt_timeout=1.0, retries=5, backoff_base=0.2, fail_max=10)

    async def times_out(budget: float) -> str:
        budgets.append(budget)
        clock.now += budget
        raise ReplyError("no reply", code=ErrorCode.UNAVAILABLE)

    budgets: list[float] = []
    with pytest.raises(ReplyError):
        await guard.call("users.get", times_out, idempotent=True)
    # 1.0, then a 0.1 wait, 1.0, a 0.2 wait, what is left (0.2); a fourth would start too late.
    assert budgets == pytest.approx([1.0, 1.0, 0.2])


async def test_a_hanging_call_times_out_as_unavailable_and_counts_as_a_failure() -> None:
    clock = Clock()
    guard = downstream(clock, timeout=0.05, fail_max=1)
    service = Service(gate=asyncio.Event())
    with pytest.raises(ReplyError) as caught:
        await guard.call("users.get", service, idempotent=False)
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert "within 0.05s" in caught.value.reply.message
    assert guard.state == "open"


async def test_every_outcome_is_counted_in_the_gateway_metrics() -> None:
    clock, metrics = Clock(), GatewayMetrics()
    guard = downstream(clock, metrics, retries=1, fail_max=2)

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    service = Service(failures=[ErrorCode.UNAVAILABLE, ErrorCode.NOT_FOUND])
    with pytest.raises(ReplyError):
        await guard.call("users.get", service, idempotent=True)
    assert sample("busway_bus_requests_total", service="users", stream="users.get", outcome="unavailable") == 1
    assert sample("busway_bus_requests_total", service="users", stream="users.get", outcome="not_found") == 1
    assert sample("busway_bus_retries_total", service="users", stream="users.get") == 1
    assert sample("busway_bus_request_duration_seconds_count", service="users", stream="users.get") == 2
    assert sample("busway_circuit_breaker_state", service="users", busway_circuit_breaker_state="closed") == 1

    await fail(guard, service, 2)
    assert sample("busway_circuit_breaker_state", service="users", busway_circuit_breaker_state="open") == 1
    assert sample("busway_circuit_breaker_opened_total", service="users") == 1
    await refused(lambda: guard.call("users.get", service, idempotent=True))
    assert sample("busway_bus_requests_total", service="users", stream="users.get", outcome=CIRCUIT_OPEN) == 1
    assert sample("busway_bus_in_flight", service="users") == 0


async def test_the_last_attempt_may_use_the_rest_of_the_deadline() -> None:
    clock = Clock()
    guard = downstream(clock, timeout=5.0, attempt_timeout=1.0, retries=2, backoff_base=0.0, fail_max=10)
    service = Service(failures=[ErrorCode.UNAVAILABLE, ErrorCode.UNAVAILABLE])
    clock_before = clock.now

    async def slow_failures(budget: float) -> str:
        clock.now += budget if service.failures else 0.0
        return await service(budget)

    assert await guard.call("users.get", slow_failures, idempotent=True) == "ok"
    assert service.budgets == pytest.approx([1.0, 1.0, 3.0])
    assert clock.now - clock_before == pytest.approx(2.0)


async def test_the_attempts_of_one_call_share_one_correlation_id() -> None:
    clock = Clock()
    guard = downstream(clock, retries=2, fail_max=10)
    seen: list[str | None] = []

    async def flaky(budget: float) -> str:
        seen.append(current_correlation_id())
        if len(seen) < 3:
            raise ReplyError("no reply", code=ErrorCode.UNAVAILABLE)
        return "ok"

    assert await guard.call("auth.jwks", flaky, idempotent=True) == "ok"
    assert len(seen) == 3
    assert seen[0] is not None
    assert len(set(seen)) == 1
    with correlated("request-1"):
        seen.clear()
        assert await guard.call("auth.jwks", flaky, idempotent=True) == "ok"
    assert seen == ["request-1"] * 3
