"""compose.yml is a valid Compose file that deploys busway with health-gated, least-privilege services."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yml"
INIT_SQL = ROOT / "deploy" / "postgres" / "init.sql"
BUSWAY_SERVICES = ("gateway", "users", "auth", "activity", "mailer")


def _check_jsonschema() -> str:
    executable = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail(f"check-jsonschema is not installed beside {sys.executable} (it is a dev dependency)")
    return executable


def _services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = compose["services"]
    return services


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"compose.yml is not valid Compose:\n{result.stdout}\n{result.stderr}"


def test_compose_defines_the_bus_database_gateway_and_every_handler_service() -> None:
    assert {"redis", "postgres", "gateway", "users", "auth", "activity", "mailer"} <= _services().keys()


def test_handler_services_run_several_replicas() -> None:
    services = _services()
    for name in ("users", "auth", "activity"):
        assert services[name]["deploy"]["replicas"] >= 2, f"{name} should run several replicas"


def test_busway_services_have_healthchecks_and_wait_for_a_healthy_redis() -> None:
    services = _services()
    for name in BUSWAY_SERVICES:
        service = services[name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends_on = service.get("depends_on", {})
        assert depends_on.get("redis", {}).get("condition") == "service_healthy", f"{name} must wait for Redis"


def test_each_database_accepts_connections_from_its_own_role_only() -> None:
    sql = " ".join(INIT_SQL.read_text().split()).lower()
    for database in ("users", "auth", "activity"):
        assert re.search(rf"revoke connect on database {database} from public ?;", sql), database
        assert re.search(rf"grant connect on database {database} to {database} ?;", sql), database


def test_every_database_is_migrated_and_the_gateway_waits_for_the_services_it_calls() -> None:
    services = _services()
    migrate = services["migrate"]["environment"]
    for name in ("USERS", "AUTH", "ACTIVITY"):
        assert f"{name}_DATABASE_URL" in migrate, name
    assert services["activity"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["gateway"]["depends_on"]["activity"]["condition"] == "service_healthy"
    assert "activity" in services["gateway"]["environment"]["GATEWAY_READY_SERVICES"]


def test_every_handler_serves_metrics_on_port_9100_of_its_container() -> None:
    services = _services()
    for name in ("users", "auth", "activity", "mailer"):
        environment = services[name]["environment"]
        assert environment[f"{name.upper()}_METRICS_PORT"] == "9100", name
        assert environment[f"{name.upper()}_METRICS_HOST"] == "0.0.0.0", name
        assert "9100" in services[name]["expose"], name


def test_each_service_has_its_own_redis_user_and_signing_key_and_no_development_secret() -> None:
    services = _services()
    for name in BUSWAY_SERVICES:
        environment = services[name]["environment"]
        assert environment["REDIS_URL"].startswith(f"redis://{name}:${{REDIS_{name.upper()}_PASSWORD:?"), name
        assert environment["BUS_SIGNING_KEY"].startswith(f"${{BUS_KEY_{name.upper()}:?"), name
        assert environment["BUSWAY_ENV"] == "production", name
    assert "dev-password" not in COMPOSE.read_text()
    redis = services["redis"]
    assert "./deploy/redis/users.acl.template:/etc/busway/users.acl.template:ro" in redis["volumes"]
