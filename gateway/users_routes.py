"""/v1/users/*: one's own profile, and others' public profiles."""

from typing import Annotated

from litestar import get, patch
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from bus.rpc import BusClient
from gateway.bodies import ProfilePatch, PublicProfile
from gateway.tokens import Claims
from schemas import streams
from schemas.commands import GetUser, ListActivity, ListUsers, UpdateUser
from schemas.replies import ActivityPage, UserPage, UserProfile

BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]


@get("/v1/users/me", summary="My profile", security=BEARER)
async def get_me(claims: NamedDependency[Claims], bus: NamedDependency[BusClient]) -> UserProfile:
    """The caller's own profile."""
    return await bus.request(streams.USERS_GET, GetUser(user_id=claims.user_id), UserProfile)


@patch("/v1/users/me", summary="Change my profile", security=BEARER)
async def patch_me(
    data: JSONBody[ProfilePatch], claims: NamedDependency[Claims], bus: NamedDependency[BusClient]
) -> UserProfile:
    """Change the fields given; the rest stay."""
    command = UpdateUser(user_id=claims.user_id, display_name=data.display_name)
    return await bus.request(streams.USERS_UPDATE, command, UserProfile)


@get("/v1/users/{user_id:str}", summary="A user's public profile", security=BEARER)
async def get_user(
    user_id: FromPath[str], claims: NamedDependency[Claims], bus: NamedDependency[BusClient]
) -> PublicProfile:
    """What any signed-in user may see of another: no email."""
    del claims  # required: only signed-in users may look
    profile = await bus.request(streams.USERS_GET, GetUser(user_id=user_id), UserProfile)
    return PublicProfile(id=profile.id, display_name=profile.display_name, created_at=profile.created_at)


@get("/v1/users/me/activity", summary="My account's activity", security=BEARER)
async def get_my_activity(
    claims: NamedDependency[Claims],
    bus: NamedDependency[BusClient],
    cursor: Annotated[
        str | None, Parameter(min_length=1, max_length=200, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=100, description="Entries per page")] = 20,
) -> ActivityPage:
    """Logins, failed logins, password changes, profile edits, revoked sessions; newest first."""
    command = ListActivity(user_id=claims.user_id, cursor=cursor, limit=limit)
    return await bus.request(streams.ACTIVITY_LIST, command, ActivityPage)


@get(
    "/v1/users",
    summary="Every user (administrators)",
    security=BEARER,
    responses={
        401: ResponseSpec(None, description="No valid access token.", media_type="application/problem+json"),
        403: ResponseSpec(
            None, description="The token does not carry the admin role.", media_type="application/problem+json"
        ),
    },
)
async def list_users(
    claims: NamedDependency[Claims],
    bus: NamedDependency[BusClient],
    cursor: Annotated[
        str | None, Parameter(min_length=1, max_length=200, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=100, description="Users per page")] = 20,
) -> UserPage:
    """Profiles, oldest first, a page at a time; for tokens with the admin role."""
    if not claims.admin:
        raise PermissionDeniedException(detail="This needs the admin role.")
    return await bus.request(streams.USERS_LIST, ListUsers(cursor=cursor, limit=limit), UserPage)


ROUTES = [get_me, patch_me, get_user, get_my_activity, list_users]
