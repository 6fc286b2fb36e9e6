"""``just bench``'s bookkeeping: CPU readings off /proc, and runs merged into the table's rows."""

import argparse
import hashlib
import os
import time

from bench.run import cpu_seconds, machine_busy, merged, report, service_cpu, with_errors


def run(rps: float, machine: int, redis: int) -> dict[str, object]:
    return {
        "scenario": "echo",
        "variant": "busway",
        "concurrency": 32,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 1,
        "cpu_us_per_request": {"gateway": 100, "users": 50},
        "loop_cpu_us_per_request": {"gateway": 100, "users": 50},
        "servers_cpu_us_per_request": {"redis": redis, "postgres": 0},
        "machine_cpu_us_per_request": machine,
    }


def test_the_runs_of_a_variant_are_averaged_and_their_errors_summed() -> None:
    row = merged([run(1000, 300, 40), run(3000, 500, 60)])

    assert row["rps"] == 2000
    assert row["errors"] == 2
    assert row["machine_cpu_us_per_request"] == 400
    assert row["servers_cpu_us_per_request"] == {"redis": 50, "postgres": 0}
    assert len(row["runs"]) == 2


def test_the_table_shows_the_machine_cpu_per_request() -> None:
    args = argparse.Namespace(scenarios=["echo"], concurrency=[32])
    table = report([merged([run(1000, 300, 40), run(3000, 500, 60)])], {}, args)

    header, line = table.splitlines()[:2]
    assert header.split()[-1] == "machine"
    assert line.split()[-2:] == ["150", "400"]  # the processes' CPU, then the machine's


def test_runs_with_error_responses_are_named_to_fail_the_bench() -> None:
    clean = {**run(1000, 300, 40), "errors": 0.0}
    failing = {**clean, "variant": "direct", "scenario": "login", "errors": 3.0}
    beside_logins = {**clean, "scenario": "me-while-login", "concurrency": 8, "login_errors": 2.0}

    read_errors = {**clean, "variant": "http-proxy", "errors": 1.0, "error_kinds": {"status": 0, "read": 1}}
    merged_runs = merged([clean, {**clean, "errors": 2.0, "error_kinds": {"status": 2}}])

    assert with_errors([clean]) == []
    assert with_errors([clean, failing, beside_logins, read_errors, merged_runs]) == [
        "direct login C=32",
        "busway me-while-login C=8",
        "http-proxy echo C=32 (read 1)",
        "busway echo C=32 (status 2)",
    ]


def test_cpu_readings_grow_with_work_done() -> None:
    busy, own = machine_busy(), cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        hashlib.sha256(b"x" * 4096).digest()

    assert machine_busy() - busy >= 0.2
    assert cpu_seconds(os.getpid()) - own >= 0.2
    assert set(service_cpu()) == {"redis", "postgres"}
