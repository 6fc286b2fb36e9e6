"""``just bench``: busway against a monolith, an HTTP-proxy gateway and FastStream's request.

Every variant runs as real processes on loopback with PostgreSQL databases of its own
and serves the same routes (bench/apps.py). All are up at once; for each scenario and
concurrency each variant in turn is warmed up and loaded, with wrk (or a Python load
generator when wrk is absent), so the runs a ratio compares are seconds apart; busway and
direct are loaded twice, first and last, and their figures are the means. One table is
printed; bench/results/latest.json and latest.png are written. No thresholds: the
figures are for reading, and the ratios compare variants of the same run.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bus.broker import create_redis
from bus.settings import BusSettings
from db.migrations import upgrade_async
from db.provision import fresh_databases
from handlers.auth.keys import generate_pem
from handlers.auth.main import MIGRATIONS as AUTH_MIGRATIONS
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PORT = 18100
PASSWORD = "bench password 1"
PY = sys.executable


def processes(variant: str, port: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """The processes of ``variant`` serving HTTP on ``port``: (label, argv, extra env) each."""
    match variant:
        case "direct":
            return [("direct", [PY, "-m", "bench.apps", "direct"], {"BENCH_PORT": str(port)})]
        case "http-proxy":
            upstream = {"BENCH_PORT": str(port), "BENCH_UPSTREAM": f"http://127.0.0.1:{port + 1}"}
            return [
                ("service", [PY, "-m", "bench.apps", "direct"], {"BENCH_PORT": str(port + 1)}),
                ("proxy", [PY, "-m", "bench.apps", "proxy"], upstream),
            ]
        case "faststream-request":
            return [
                ("fs-handler", [PY, "-m", "bench.apps", "fs-handler"], {}),
                ("fs-gateway", [PY, "-m", "bench.apps", "fs-gateway"], {"BENCH_PORT": str(port)}),
            ]
        case _:  # busway
            return [
                ("users", [PY, "-m", "handlers.users", "serve"], {}),
                ("auth", [PY, "-m", "handlers.auth", "serve"], {}),
                ("gateway", [PY, "-m", "gateway"], {"GATEWAY_PORT": str(port)}),
            ]


VARIANTS = ("direct", "http-proxy", "faststream-request", "busway")

SCENARIOS = ("echo", "me", "login", "register", "me-while-login")
DEFAULT_SCENARIOS = SCENARIOS[:4]


@dataclass(frozen=True)
class Request:
    """What one scenario sends."""

    method: str
    path: str
    body: str | None = None
    unique_email: bool = False
    token: str | None = None


def scenario_request(scenario: str, email: str, token: str) -> Request:
    login = json.dumps({"email": email, "password": PASSWORD})
    register = '{"email":"%s","password":"' + PASSWORD + '","display_name":"Bench"}'
    return {
        "echo": Request("GET", "/v1/ping"),
        "me": Request("GET", "/v1/users/me", token=token),
        "login": Request("POST", "/v1/auth/login", body=login),
        "register": Request("POST", "/v1/auth/register", body=register, unique_email=True),
    }[scenario]


def wrk_script(request: Request) -> str:
    headers = ['["Content-Type"] = "application/json"']
    if request.token:
        headers.append(f'["Authorization"] = "Bearer {request.token}"')
    lines = [f"wrk.method = {json.dumps(request.method)}", f"wrk.path = {json.dumps(request.path)}"]
    lines += [f"wrk.headers{h}" for h in headers]
    if request.unique_email:
        template = json.dumps(request.body)
        lines += [
            "local counter = 0",
            "init = function(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16)) end",
            "request = function()",
            "  counter = counter + 1",
            '  local email = string.format("b%d-%d@bench.example.com", math.random(1, 2000000000), counter)',
            f"  return wrk.format(nil, nil, nil, string.format({template}, email))",
            "end",
        ]
    elif request.body is not None:
        lines.append(f"wrk.body = {json.dumps(request.body)}")
    lines += [
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        '  io.write(string.format("RESULT %d %d %f %f %d %d %d %d %d\\n", summary.requests, summary.duration,',
        "    latency:percentile(50), latency:percentile(99), e.status, e.connect, e.read, e.write, e.timeout))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _errors(kinds: dict[str, int]) -> dict[str, Any]:
    """A load run's error figures: how many in all, and by kind when there were any."""
    return {"errors": float(sum(kinds.values())), **({"error_kinds": kinds} if any(kinds.values()) else {})}


WRK_ERRORS = ("status", "connect", "read", "write", "timeout")
"""wrk's kinds of error: a response that was not 2xx or 3xx, then the socket's failures."""


def run_wrk(base: str, request: Request, connections: int, seconds: float) -> dict[str, Any]:
    script = Path(f"/tmp/busway-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}.lua")
    script.write_text(wrk_script(request))
    argv = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    try:
        out = subprocess.run([*argv, "-s", str(script), base], capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink(missing_ok=True)
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)((?: \d+){5})", out)
    if not match:
        raise SystemExit(f"bench: could not read wrk's output:\n{out}")
    requests, duration_us, p50_us, p99_us = (float(g) for g in match.groups()[:4])
    kinds = dict(zip(WRK_ERRORS, (int(n) for n in match.group(5).split()), strict=True))
    figures = {"rps": requests / (duration_us / 1e6), "p50_ms": p50_us / 1000, "p99_ms": p99_us / 1000}
    return {**figures, **_errors(kinds)}


async def run_python(base: str, request: Request, connections: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    kinds = {"status": 0, "transport": 0}
    headers = {"content-type": "application/json"}
    if request.token:
        headers["authorization"] = f"Bearer {request.token}"
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=connections), timeout=10) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                body = request.body
                if request.unique_email and body is not None:
                    body = body % f"b{uuid.uuid4().hex}@bench.example.com"
                started = time.perf_counter()
                try:
                    response = await client.request(request.method, request.path, content=body, headers=headers)
                    kinds["status"] += response.status_code >= 400
                except httpx.HTTPError:
                    kinds["transport"] += 1
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        **_errors(kinds),
    }


async def load(base: str, request: Request, connections: int, seconds: float) -> dict[str, Any]:
    if shutil.which("wrk"):
        return await asyncio.to_thread(run_wrk, base, request, connections, seconds)
    return await run_python(base, request, connections, seconds)


def _cpu_in(stat: str) -> float:
    """The CPU seconds (user and system) a ``/proc/<pid>/stat`` text says its process used."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """CPU time a process (or its main thread: the event loop) has used so far, in seconds."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    with suppress(OSError):
        return _cpu_in(Path(path).read_text())
    return float("nan")


def cpu_times(running: "Running", *, main_thread: bool = False) -> dict[str, float]:
    """``cpu_seconds`` of each process of ``running`` (or of each one's main thread), by label."""
    return {label: cpu_seconds(proc.pid, main_thread=main_thread) for label, proc in running.procs.items()}


SERVICES = {"redis-server": "redis", "postgres": "postgres"}
"""The shared servers whose CPU a run also counts, by process name."""


def service_cpu() -> dict[str, float]:
    """CPU time Redis and PostgreSQL (all its processes) have used so far, in seconds.

    Shared by the variants, but only the one being loaded is busy: the idle ones add a
    few ms per second (printed before the runs). A PostgreSQL backend that starts or
    ends within a run counts only with the CPU it used while both readings saw it.
    """
    totals = dict.fromkeys(SERVICES.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            name = SERVICES.get(text.split("(", 1)[1].rsplit(")", 1)[0])
            if name is not None:
                totals[name] += _cpu_in(text)
    return totals


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle so far (all processes, wrk included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in MB."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Running:
    variant: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


@contextmanager
def started(variant: str, port: int, env: dict[str, str], logs: Path) -> Iterator[Running]:
    running = Running(variant)
    try:
        for label, argv, extra in processes(variant, port):
            out = (logs / f"{variant}-{label}.log").open("w")
            running.procs[label] = subprocess.Popen(
                argv, cwd=ROOT, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT
            )
        yield running
    finally:
        for proc in running.procs.values():
            proc.terminate()
        for proc in running.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def profiled(running: Running, folder: Path | None, what: str, seconds: float) -> Iterator[None]:
    """With ``folder``, sample every process of ``running`` with py-spy while the block runs.

    Each process's stacks go to ``<folder>/<variant>-<what>-<label>.txt`` in py-spy's
    collapsed ("raw") format: one line per stack with its sample count, ready for
    flamegraph.pl, speedscope, or ``sort -k2 -n``.
    """
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    samplers = []
    for label, proc in running.procs.items():
        output = folder / f"{running.variant}-{what}-{label}.txt"
        argv = ["py-spy", "record", "--pid", str(proc.pid), "--duration", str(max(1, round(seconds)))]
        argv += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(output)]
        samplers.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for sampler in samplers:
            try:
                sampler.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                sampler.kill()


def wait_ready(base: str, running: Running, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    path = "/ready" if running.variant == "busway" else "/v1/ping"
    while time.monotonic() < deadline:
        for label, proc in running.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"bench: {running.variant}/{label} exited with {proc.returncode}; see its log")
        with suppress(httpx.HTTPError):
            if (
                httpx.get(base + path, timeout=2).status_code == 200
                and httpx.get(base + "/v1/ping", timeout=5).status_code == 200
            ):
                return
        time.sleep(0.3)
    raise SystemExit(f"bench: {running.variant} did not become ready")


def account(base: str) -> tuple[str, str]:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": "Bench"}
    created = httpx.post(base + "/v1/auth/register", json=body, timeout=30)
    if created.status_code != 201:
        raise SystemExit(f"bench: register answered {created.status_code}: {created.text}")
    login = httpx.post(base + "/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    login.raise_for_status()
    return email, login.json()["access_token"]


@dataclass
class Variant:
    """One variant up and answering: its processes, its URL, the account the loads use."""

    running: Running
    base: str
    email: str
    token: str


@asynccontextmanager
async def own_prefix(prefix: str) -> AsyncIterator[None]:
    """Remove every Redis key under ``prefix`` (streams, groups' failures, heartbeats) afterwards."""
    try:
        yield
    finally:
        redis = create_redis(BusSettings(environment="test", prefix=prefix))
        try:
            keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await redis.delete(*keys[start : start + 500])
        finally:
            await redis.aclose()


@asynccontextmanager
async def prepared(
    variant: str, port: int, args: argparse.Namespace, admin_url: str, logs: Path
) -> AsyncIterator[Variant]:
    """``variant`` on ``port``, on fresh databases of its own (dropped afterwards)."""
    suffix = uuid.uuid4().hex[:6]
    names = [f"busway_bench_users_{suffix}", f"busway_bench_auth_{suffix}"]
    async with fresh_databases(admin_url, names) as (users_url, auth_url), own_prefix(f"bench-{suffix}:"):
        await upgrade_async(USERS_MIGRATIONS, users_url)
        await upgrade_async(AUTH_MIGRATIONS, auth_url)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BUSWAY_ENV": "test",
            "BUS_PREFIX": f"bench-{suffix}:",
            "LOG_LEVEL": "WARNING",
            "USERS_DATABASE_URL": users_url,
            "AUTH_DATABASE_URL": auth_url,
            "USERS_MIGRATE_ON_START": "false",
            "AUTH_MIGRATE_ON_START": "false",
            "AUTH_SIGNING_KEY": args.signing_key,
            # Every variant's edge has busway's gateway's guards (bench.apps). The loader is
            # one client logging in to one account many times at once: the guards would
            # (rightly) lock it out. Rate limits off, the lockout's limits far away.
            "GATEWAY_RATE_LIMIT": "0",
            "GATEWAY_LOGIN_MAX_FAILURES": "1000",
            "GATEWAY_LOGIN_MAX_FAILURES_PER_IP": "100000",
        }
        base = f"http://127.0.0.1:{port}"
        with started(variant, port, env, logs) as running:
            await asyncio.to_thread(wait_ready, base, running)
            email, token = await asyncio.to_thread(account, base)
            yield Variant(running, base, email, token)


async def measure(variant: Variant, scenario: str, connections: int, args: argparse.Namespace) -> dict[str, Any]:
    """One warmed-up run of ``scenario`` at ``connections``: its figures and each process's CPU per request."""
    running, name = variant.running, variant.running.variant
    request = scenario_request(scenario, variant.email, variant.token)
    await load(variant.base, request, connections, args.warmup)
    before, loops_before = cpu_times(running), cpu_times(running, main_thread=True)
    services_before, busy_before = service_cpu(), machine_busy()
    with profiled(running, args.profile, f"{scenario}-c{connections}", args.duration):
        figures = await load(variant.base, request, connections, args.duration)
    served = max(1.0, figures["rps"] * args.duration)
    after, loops_after = cpu_times(running), cpu_times(running, main_thread=True)
    services_after, busy_after = service_cpu(), machine_busy()
    cpu = {label: round((after[label] - before[label]) / served * 1e6) for label in after}
    # The event loop's share alone: without the hashing threads' CPU.
    loop_cpu = {label: round((loops_after[label] - loops_before[label]) / served * 1e6) for label in after}
    services = {
        label: round((services_after[label] - services_before[label]) / served * 1e6) for label in SERVICES.values()
    }
    machine = round((busy_after - busy_before) / served * 1e6)
    print(
        f"  {name:<19} {scenario:<9} C={connections:<3} {figures['rps']:>8.0f} req/s, "
        f"CPU µs per request {cpu}, of it event loops {loop_cpu}, servers {services}, machine {machine}",
        flush=True,
    )
    return {
        "scenario": scenario,
        "variant": name,
        "concurrency": connections,
        **figures,
        "cpu_us_per_request": cpu,
        "loop_cpu_us_per_request": loop_cpu,
        "servers_cpu_us_per_request": services,
        "machine_cpu_us_per_request": machine,
    }


async def bench(
    args: argparse.Namespace, admin_url: str, logs: Path
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every variant up at once, then each run of each variant back to back.

    This VM's speed drifts within minutes (docs/performance.md): the runs a ratio compares
    are seconds apart, not a variant's whole series apart, and busway and direct run twice
    per scenario, around the others (``palindrome``). The variants not being loaded idle
    meanwhile (their idle CPU is printed: a few ms per second).
    """
    rows: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        variants = {
            name: await stack.enter_async_context(prepared(name, PORT + 10 * number, args, admin_url, logs))
            for number, name in enumerate(args.variants)
        }
        idle = {}
        for name, variant in variants.items():
            idle[name] = await idle_cpu(variant.running, 1 if args.quick else 5)
            print(f"  {name:<19} idle CPU, ms per second: {idle[name]}", flush=True)
        for scenario in args.scenarios:
            if scenario == "me-while-login":
                for name, variant in variants.items():
                    rows.append(await me_while_login(variant.base, name, variant.email, variant.token, args))
                continue
            for connections in args.concurrency:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
                for name in palindrome(list(variants)):
                    runs[name].append(await measure(variants[name], scenario, connections, args))
                rows += [merged(measured) for measured in runs.values()]
        if args.soak and "busway" in variants:
            busway = variants["busway"]
            me = scenario_request("me", busway.email, busway.token)
            rows.append(await soak(busway.base, busway.running, me, args.soak))
        rss = {
            name: {label: rss_mb(proc.pid, "VmHWM") for label, proc in variant.running.procs.items()}
            for name, variant in variants.items()
        }
    return rows, rss, idle


def palindrome(names: list[str]) -> list[str]:
    """The order of one scenario's runs: busway and direct first and again last, the others between.

    This VM's speed drifts within minutes, and a ratio of two runs minutes apart carries
    that drift. Run in the order direct, busway, others, busway, direct, the two runs of
    busway and of direct are centred on the same moment (so are the others', within a
    run's length of it): a steady drift weighs on the means of both alike.
    """
    ends = [name for name in ("direct", "busway") if name in names]
    middle = [name for name in names if name not in ends]
    return [*ends, *middle, *reversed(ends)] if len(ends) == 2 else names


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a variant's runs of a scenario: the mean of each figure, the errors summed."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    row: dict[str, Any] = {key: first[key] for key in ("scenario", "variant", "concurrency")}
    for key in ("rps", "p50_ms", "p99_ms"):
        row[key] = statistics.fmean(run[key] for run in runs)
    row["errors"] = sum(run["errors"] for run in runs)
    for key in ("cpu_us_per_request", "loop_cpu_us_per_request", "servers_cpu_us_per_request"):
        row[key] = {label: round(statistics.fmean(run[key][label] for run in runs)) for label in first[key]}
    row["machine_cpu_us_per_request"] = round(statistics.fmean(run["machine_cpu_us_per_request"] for run in runs))
    row["runs"] = runs
    return row


async def idle_cpu(running: Running, seconds: float) -> dict[str, float]:
    """Each process's CPU use without load (heartbeats, claimers, pollers), in ms per second.

    The per-request CPU figures include this background share: at 40 logins a second, a
    service idling at 20 ms/s adds 0.5 ms to each.
    """
    before = cpu_times(running)
    await asyncio.sleep(seconds)
    after = cpu_times(running)
    return {label: round((after[label] - before[label]) / seconds * 1000, 1) for label in after}


async def me_while_login(base: str, variant: str, email: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """``me`` at C=8 while logins (argon2) run at C=8: does hashing stall other requests?"""
    me, login = scenario_request("me", email, token), scenario_request("login", email, token)
    await asyncio.gather(load(base, login, 8, args.warmup), load(base, me, 8, args.warmup))
    me_figures, login_figures = await asyncio.gather(
        load(base, me, 8, args.duration), load(base, login, 8, args.duration)
    )
    print(f"  {variant:<19} me while login: p99 {me_figures['p99_ms']:.1f} ms", flush=True)
    return {
        "scenario": "me-while-login",
        "variant": variant,
        "concurrency": 8,
        **me_figures,
        "login_rps": login_figures["rps"],
        "login_errors": login_figures["errors"],
    }


async def soak(base: str, running: Running, request: Request, seconds: int) -> dict[str, Any]:
    """``me`` at C=32 for ``seconds``, sampling each process's RSS every 10 s."""
    samples: dict[str, list[float]] = {label: [] for label in running.procs}
    task = asyncio.create_task(load(base, request, 32, seconds))
    while not task.done():
        for label, proc in running.procs.items():
            samples[label].append(round(rss_mb(proc.pid), 1))
        await asyncio.wait([task], timeout=10)
    figures = task.result()
    print(f"  soak {seconds}s: {figures['rps']:.0f} req/s, {figures['errors']:.0f} errors", flush=True)
    for label, series in samples.items():
        print(f"    {label:<8} RSS MB every 10 s: {series}", flush=True)
    return {"scenario": "soak-me", "variant": "busway", "concurrency": 32, **figures, "rss_mb_every_10s": samples}


def with_errors(rows: list[dict[str, Any]]) -> list[str]:
    """The runs that got error responses, e.g. ``busway login C=32``.

    No thresholds on the figures; but a variant that answered with errors was not measured
    doing the work, and the smoke test (``--quick``, in CI) must fail.
    """
    failed = []
    for row in rows:
        if row["errors"] or row.get("login_errors"):
            kinds: Counter[str] = Counter()
            for run in row.get("runs", [row]):
                kinds.update(run.get("error_kinds", {}))
            said = ", ".join(f"{kind} {n}" for kind, n in kinds.items() if n)
            failed.append(f"{row['variant']} {row['scenario']} C={row['concurrency']}" + (f" ({said})" if said else ""))
    return failed


def ratio(rows: list[dict[str, Any]], scenario: str, connections: int, over: str) -> float | None:
    by = {r["variant"]: r["rps"] for r in rows if r["scenario"] == scenario and r["concurrency"] == connections}
    if "busway" in by and by.get(over):
        return float(by["busway"] / by[over])
    return None


def report(rows: list[dict[str, Any]], rss: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"{'scenario':<14} {'variant':<19} {'C':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'CPU µs/req':>10} {'machine':>8}"
    ]
    order = [*SCENARIOS, "soak-me"]
    for row in sorted(rows, key=lambda r: (order.index(r["scenario"]), r["concurrency"])):
        lines.append(
            f"{row['scenario']:<14} {row['variant']:<19} {row['concurrency']:>3} {row['rps']:>8.0f} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['errors']:>6.0f} "
            f"{sum(row.get('cpu_us_per_request', {}).values()) or '':>10} "
            f"{row.get('machine_cpu_us_per_request', ''):>8}"
        )
    lines.append("")
    lines.append("ratios of throughput (same run): busway/direct, busway/faststream-request")
    for scenario in [s for s in args.scenarios if s in DEFAULT_SCENARIOS]:
        for connections in args.concurrency:
            parts = [f"{scenario:<9} C={connections:<3}"]
            for over in ("direct", "faststream-request"):
                value = ratio(rows, scenario, connections, over)
                parts.append(f"{over}: {value:.2f}" if value is not None else f"{over}: -")
            lines.append("  ".join(parts))
    lines.append("")
    lines.append("peak RSS per process (MB)")
    for variant, procs in rss.items():
        lines.append(f"  {variant:<19} " + ", ".join(f"{label} {mb:.0f}" for label, mb in procs.items()))
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path, connections: int) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    scenarios = [s for s in DEFAULT_SCENARIOS if any(r["scenario"] == s for r in rows)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        values = [
            next(
                (
                    r["rps"]
                    for r in rows
                    if r["variant"] == variant and r["scenario"] == s and r["concurrency"] == connections
                ),
                0,
            )
            for s in scenarios
        ]
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=variant)
    ax.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(scenarios))], scenarios)
    ax.set_yscale("log")
    ax.set_ylabel("requests per second (log)")
    ax.set_title(f"busway vs alternatives, C={connections}, {os.cpu_count()} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(DEFAULT_SCENARIOS))
    parser.add_argument("--soak", type=int, default=0, help="then load busway's me at C=32 this many seconds")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 s runs at C=32")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="sample every process with py-spy during each run, into DIR"
    )
    args = parser.parse_args()
    if args.profile is not None and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    if args.quick:
        args.duration, args.warmup, args.concurrency = 1, 0.5, [32]
    if min(args.concurrency) < 1 or args.duration <= 0 or args.warmup < 0 or args.soak < 0:
        parser.error("--concurrency and --duration must be positive, --warmup and --soak not negative")
    args.signing_key = generate_pem().decode()
    admin_url = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    logs = Path("/tmp/busway-bench-logs")
    logs.mkdir(exist_ok=True)

    loader = "wrk" if shutil.which("wrk") else "python (httpx)"
    print(f"bench: {len(args.variants)} variants, loader {loader}, logs in {logs}", flush=True)
    rows, rss, idle = asyncio.run(bench(args, admin_url, logs))
    table = report(rows, rss, args)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    with suppress(OSError):
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        machine["cpu"] = model.group(1) if model else "unknown"
    summary = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine, "loader": loader,
               "duration": args.duration, "results": rows, "peak_rss_mb": rss,
               "idle_cpu_ms_per_s": idle}  # fmt: skip
    (RESULTS / "latest.json").write_text(json.dumps(summary, indent=2))
    chart(rows, RESULTS / "latest.png", max(args.concurrency))
    print(f"\nwritten {RESULTS.relative_to(ROOT)}/latest.json and latest.png")
    if failed := with_errors(rows):
        raise SystemExit(f"bench: error responses in {', '.join(failed)} (logs in {logs})")


if __name__ == "__main__":
    main()
