"""POST /v1/auth/register and GET /v1/auth/registrations/{id}, end to end."""

import pytest
from sqlmodel import select

from handlers.auth.models import Credential, RegistrationRow
from handlers.users.models import Profile
from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import Databases, System, eventually, run_system

pytestmark = pytest.mark.e2e


async def test_register_returns_the_new_user(system: System) -> None:
    email = new_email()
    response = await system.http.post(
        "/v1/auth/register", json={"email": email.upper(), "password": PASSWORD, "display_name": "  Ann  "}
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == email
    assert user["display_name"] == "Ann"
    assert response.headers["location"] == f"/v1/users/{user['id']}"
    assert set(user) == {"id", "email", "display_name", "created_at", "updated_at"}

    async with system.sessions("auth")() as session:
        credential = await session.get(Credential, user["id"])
    assert credential is not None
    assert credential.status == "active"
    assert credential.password_hash.startswith("$argon2")


async def test_register_twice_is_409(system: System) -> None:
    body = {"email": new_email(), "password": PASSWORD, "display_name": "Ann"}
    assert (await system.http.post("/v1/auth/register", json=body)).status_code == 201
    again = await system.http.post("/v1/auth/register", json=body)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["type"] == "/problems/email-taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "display_name": "Ann"}, "email"),
        ({"email": "a@example.com", "password": "short", "display_name": "Ann"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": ""}, "display_name"),
        ({"email": "a@example.com", "password": PASSWORD}, "display_name"),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": "Ann", "admin": True}, "admin"),
        ({"email": "a@example.com", "password": PASSWORD, "display_name": "nul\u0000byte"}, "display_name"),
    ],
)
async def test_register_rejects_invalid_bodies_with_field_errors(
    system: System, body: dict[str, object], field: str
) -> None:
    response = await system.http.post("/v1/auth/register", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {error["field"] for error in problem["errors"]}
    assert problem["correlation_id"] == response.headers["x-request-id"]


async def test_register_with_malformed_json_is_400(system: System) -> None:
    response = await system.http.post(
        "/v1/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text


async def test_register_answers_202_when_the_saga_is_slow(redis_url: str, databases: Databases) -> None:
    async with run_system(databases, redis_url=redis_url, registration_wait=0) as system:
        response = await system.http.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "display_name": "Slow"}
        )
        assert response.status_code == 202, response.text
        pending = response.json()
        assert pending["status"] == "pending"
        assert response.headers["location"] == pending["status_url"]

        async def completed() -> dict[str, object] | None:
            state = (await system.http.get(pending["status_url"])).json()
            return state if state["state"] == "completed" else None

        state = await eventually(completed, what="the saga to complete")
        assert state["registration_id"] == pending["registration_id"]
        assert isinstance(state["user"], dict)
        assert state["user"]["display_name"] == "Slow"


async def test_unknown_registration_is_404(system: System) -> None:
    response = await system.http.get("/v1/auth/registrations/doesnotexist")
    assert response.status_code == 404
    assert response.json()["correlation_id"]


async def test_malformed_registration_id_is_422(system: System) -> None:
    response = await system.http.get("/v1/auth/registrations/" + "x" * 65)
    assert response.status_code == 422


async def test_compensation_when_users_refuses_the_profile(system: System) -> None:
    """users already has a profile with this email (and auth has no credential): the saga
    fails, auth deletes the pending credential, and no row is left behind on either side."""
    email = new_email()
    async with system.sessions("users")() as session, session.begin():
        session.add(Profile(id="preexisting-" + email[:20].replace("@", "-"), email=email, display_name="Old"))

    response = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "New"}
    )
    assert response.status_code == 409, response.text
    problem = response.json()
    registration_id = problem["registration_id"]

    state = (await system.http.get(f"/v1/auth/registrations/{registration_id}")).json()
    assert state["state"] == "failed"
    assert state["reason"] == "email_taken"

    async with system.sessions("auth")() as session:
        credentials = (await session.exec(select(Credential).where(Credential.email == email))).all()
        registration = await session.get(RegistrationRow, registration_id)
    assert credentials == []
    assert registration is not None
    assert registration.state == "failed"
    async with system.sessions("users")() as session:
        profiles = (await session.exec(select(Profile).where(Profile.email == email))).all()
    assert [p.display_name for p in profiles] == ["Old"]

    login = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 401
