"""``just bench``: GET /v1/users/me through busway against the same query served directly.

Starts, on loopback: the users and auth services and the gateway (real processes,
PostgreSQL databases of their own), and the direct baseline app on the same users
database. Registers a user, then loads each variant in turn with wrk (or a Python load
generator when wrk is absent) and prints one table. Needs Redis (REDIS_URL) and
PostgreSQL (TEST_POSTGRES_URL). No thresholds: the figures are for reading.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path

import httpx

from db.migrations import upgrade_async
from db.provision import fresh_databases
from handlers.auth.keys import generate_pem
from handlers.auth.main import MIGRATIONS as AUTH_MIGRATIONS
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS

GATEWAY_PORT = 18000
DIRECT_PORT = 18001
ROOT = Path(__file__).resolve().parent.parent


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"bench: {url} did not become ready")


def run_wrk(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    script = Path("/tmp/busway-bench-wrk.lua")
    script.write_text(
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, '
        "summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + "
        "summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))\n"
        "end\n"
    )
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if not match:
        raise SystemExit(f"bench: could not read wrk output:\n{out}")
    requests, errors, duration_us, p50_us, p99_us = (float(g) for g in match.groups())
    return {"rps": requests / (duration_us / 1e6), "p50_ms": p50_us / 1000, "p99_ms": p99_us / 1000, "errors": errors}


async def run_python(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "errors": errors,
    }


async def load(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return await asyncio.to_thread(run_wrk, url, token, connections, seconds)
    return await run_python(url, token, connections, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per variant and concurrency")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per variant")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="2 s per run, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 2, 1
    if min(args.concurrency) < 1 or args.duration < 1:
        parser.error("--concurrency and --duration must be positive")

    admin_url = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(args, admin_url))


async def run(args: argparse.Namespace, admin_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    names = [f"busway_bench_users_{suffix}", f"busway_bench_auth_{suffix}"]
    async with fresh_databases(admin_url, names) as (users_url, auth_url):
        await upgrade_async(USERS_MIGRATIONS, users_url)
        await upgrade_async(AUTH_MIGRATIONS, auth_url)
        await measure(args, suffix, users_url, auth_url)


async def measure(args: argparse.Namespace, suffix: str, users_url: str, auth_url: str) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BUSWAY_ENV": "test",
        "BUS_PREFIX": f"bench-{suffix}:",
        "LOG_LEVEL": "WARNING",
        "USERS_DATABASE_URL": users_url,
        "AUTH_DATABASE_URL": auth_url,
        "AUTH_SIGNING_KEY": generate_pem().decode(),
        "GATEWAY_PORT": str(GATEWAY_PORT),
        "BENCH_PORT": str(DIRECT_PORT),
    }
    commands = {
        "users": [sys.executable, "-m", "handlers.users", "serve"],
        "auth": [sys.executable, "-m", "handlers.auth", "serve"],
        "gateway": [sys.executable, "-m", "gateway"],
        "direct": [sys.executable, "-m", "bench.direct_app"],
    }
    logs = Path("/tmp/busway-bench-logs")
    logs.mkdir(exist_ok=True)
    procs = {
        name: subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT
        )
        for name, argv in commands.items()
    }
    try:
        wait_http(f"http://127.0.0.1:{GATEWAY_PORT}/health")
        wait_http(f"http://127.0.0.1:{DIRECT_PORT}/schema/openapi.json")
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{GATEWAY_PORT}/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the handlers did not become ready")
            time.sleep(0.2)
        email, password = f"bench-{suffix}@example.com", "bench password"
        gateway = f"http://127.0.0.1:{GATEWAY_PORT}"
        created = httpx.post(
            f"{gateway}/v1/auth/register",
            json={"email": email, "password": password, "display_name": "Bench"},
            timeout=30,
        )
        created.raise_for_status()
        token = httpx.post(f"{gateway}/v1/auth/login", json={"email": email, "password": password}, timeout=30).json()[
            "access_token"
        ]
        variants = {"direct": f"http://127.0.0.1:{DIRECT_PORT}/v1/users/me", "busway": f"{gateway}/v1/users/me"}
        for url in variants.values():
            check = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            if check.status_code != 200:
                raise SystemExit(f"bench: {url} answered {check.status_code}: {check.text}")

        results: list[dict[str, object]] = []
        for connections in args.concurrency:
            for variant, url in variants.items():
                await load(url, token, connections, args.warmup)
                figures = await load(url, token, connections, args.duration)
                results.append({"scenario": "me", "variant": variant, "concurrency": connections, **figures})
        print(f"\nGET /v1/users/me, {args.duration}s per run, loader: {'wrk' if shutil.which('wrk') else 'python'}")
        print(f"{'variant':<10} {'C':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for row in results:
            print(
                f"{row['variant']:<10} {row['concurrency']:>3} {row['rps']:>9.0f} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['errors']:>7.0f}"
            )
        for connections in args.concurrency:
            by = {r["variant"]: r for r in results if r["concurrency"] == connections}
            ratio = float(by["busway"]["rps"]) / float(by["direct"]["rps"])  # type: ignore[arg-type]
            print(f"C={connections}: busway/direct throughput = {ratio:.2f}")
        out = ROOT / "bench" / "results" / "latest.json"
        out.write_text(json.dumps({"results": results, "duration": args.duration}, indent=2))
        print(f"written {out.relative_to(ROOT)}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
