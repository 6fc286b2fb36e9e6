"""/v1/users/*: one's own profile, and others' public profiles."""

from typing import Annotated, Any

from litestar import Request, Response, delete, get, patch
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from gateway.bodies import AccountDeletionPending, ProfilePatch, PublicProfile
from gateway.state import Gateway
from schemas import streams
from schemas.commands import DeleteAccount, GetAccountDeletion, GetUser, ListActivity, ListUsers, UpdateUser
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import AccountDeletion, ActivityPage, RegistrationState, UserPage, UserProfile

PROBLEM = "application/problem+json"

PageCursor = Annotated[
    str | None, Parameter(min_length=1, max_length=200, description="next_cursor of the previous page")
]
"""The query parameter that asks for the page after the one that gave this cursor."""


def deletion_response(deletion: AccountDeletion) -> Response[AccountDeletionPending | None]:
    """204 once deleted, 202 while pending; a compensated saga is raised as its error."""
    if deletion.state == RegistrationState.COMPLETED:
        return Response(None, status_code=204)
    if deletion.state == RegistrationState.FAILED:
        raise ReplyError(
            deletion.reason_message or "The account could not be deleted.",
            code=deletion.reason or ErrorCode.INTERNAL,
            extra={"deletion_id": deletion.deletion_id},
        )
    status_url = f"/v1/auth/account-deletions/{deletion.deletion_id}"
    pending = AccountDeletionPending(deletion_id=deletion.deletion_id, status=deletion.state, status_url=status_url)
    return Response(pending, status_code=202, headers={"Location": status_url})


def routes(gateway: Gateway) -> list[HTTPRouteHandler]:
    """The profile routes of ``gateway`` (see ``gateway.app`` on why routes close over it)."""
    bearer = gateway.bearer()

    @get("/v1/users/me", summary="My profile", **bearer)
    async def get_me(request: Request[Any, Any, Any]) -> UserProfile:
        """The caller's own profile."""
        claims = await gateway.claims(request)
        return await gateway.bus.request(streams.USERS_GET, GetUser(user_id=claims.user_id), UserProfile)

    @patch("/v1/users/me", summary="Change my profile", **bearer)
    async def patch_me(data: JSONBody[ProfilePatch], request: Request[Any, Any, Any]) -> UserProfile:
        """Change the fields given; the rest stay."""
        claims = await gateway.claims(request)
        command = UpdateUser(user_id=claims.user_id, display_name=data.display_name)
        return await gateway.bus.request(streams.USERS_UPDATE, command, UserProfile)

    @get("/v1/users/{user_id:str}", summary="A user's public profile", **bearer)
    async def get_user(user_id: FromPath[str]) -> PublicProfile:
        """What any signed-in user may see of another (``bearer`` lets only them in): no email."""
        profile = await gateway.bus.request(streams.USERS_GET, GetUser(user_id=user_id), UserProfile)
        return PublicProfile(id=profile.id, display_name=profile.display_name, created_at=profile.created_at)

    @get("/v1/users/me/activity", summary="My account's activity", **bearer)
    async def get_my_activity(
        request: Request[Any, Any, Any],
        cursor: PageCursor = None,
        limit: Annotated[int, Parameter(ge=1, le=100, description="Entries per page")] = 20,
    ) -> ActivityPage:
        """Logins, failed logins, password changes, profile edits, revoked sessions; newest first."""
        claims = await gateway.claims(request)
        command = ListActivity(user_id=claims.user_id, cursor=cursor, limit=limit)
        return await gateway.bus.request(streams.ACTIVITY_LIST, command, ActivityPage)

    @get(
        "/v1/users",
        summary="Every user (administrators)",
        **bearer,
        responses={
            401: ResponseSpec(None, description="No valid access token.", media_type="application/problem+json"),
            403: ResponseSpec(
                None, description="The token does not carry the admin role.", media_type="application/problem+json"
            ),
        },
    )
    async def list_users(
        request: Request[Any, Any, Any],
        cursor: PageCursor = None,
        limit: Annotated[int, Parameter(ge=1, le=100, description="Users per page")] = 20,
    ) -> UserPage:
        """Profiles, oldest first, a page at a time; for tokens with the admin role."""
        if not (await gateway.claims(request)).admin:
            raise PermissionDeniedException(detail="This needs the admin role.")
        return await gateway.bus.request(streams.USERS_LIST, ListUsers(cursor=cursor, limit=limit), UserPage)

    @delete(
        "/v1/users/me",
        status_code=202,
        summary="Delete my account",
        **bearer,
        responses={
            204: ResponseSpec(None, description="The account is deleted."),
            403: ResponseSpec(
                None, description="The account may not be deleted now; it is intact.", media_type=PROBLEM
            ),
        },
    )
    async def delete_me(request: Request[Any, Any, Any]) -> Response[AccountDeletionPending | None]:
        """Delete my profile, credentials, sessions and activity; every token of mine stops working at once.

        204 once deleted; 202 with ``status_url`` when the saga has not finished in time.

        The access token is proof enough, as for any DELETE of one's own resource: no password.
        Waits up to GATEWAY_REGISTRATION_WAIT seconds for the saga, like register.
        """
        claims = await gateway.claims(request)
        deletion = await gateway.bus.run_saga(
            streams.AUTH_DELETE_ACCOUNT,
            DeleteAccount(user_id=claims.user_id),
            AccountDeletion,
            wait=gateway.settings.registration_wait,
            what="the account deletion",
        )
        return deletion_response(deletion)

    @get("/v1/auth/account-deletions/{deletion_id:str}", summary="An account deletion saga's state")
    async def get_account_deletion(deletion_id: FromPath[str]) -> AccountDeletion:
        """pending, completed or failed (with the reason: the account was restored).

        No token: the account's tokens stopped working when the deletion began; the id is unguessable.
        """
        return await gateway.bus.request(
            streams.AUTH_GET_ACCOUNT_DELETION, GetAccountDeletion(deletion_id=deletion_id), AccountDeletion
        )

    return [get_me, patch_me, get_user, get_my_activity, list_users, delete_me, get_account_deletion]
