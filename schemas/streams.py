"""Stream and channel names. The only place they are spelled out.

Commands go to one stream per command, ``<service>.<command>``; events to one stream per
producing service, ``events.<service>``, so the events of one aggregate stay ordered.
A deployment may put a prefix in front of every name (``BUS_PREFIX``); tests use that to
isolate themselves.
"""

from typing import Final

AUTH_REGISTER: Final = "auth.register"
AUTH_LOGIN: Final = "auth.login"
AUTH_JWKS: Final = "auth.jwks"
AUTH_GET_REGISTRATION: Final = "auth.get_registration"
AUTH_REFRESH: Final = "auth.refresh"
AUTH_LOGOUT: Final = "auth.logout"
AUTH_CHANGE_PASSWORD: Final = "auth.change_password"
AUTH_REQUEST_PASSWORD_RESET: Final = "auth.request_password_reset"
AUTH_CONFIRM_PASSWORD_RESET: Final = "auth.confirm_password_reset"
AUTH_LIST_SESSIONS: Final = "auth.list_sessions"
AUTH_REVOKE_SESSION: Final = "auth.revoke_session"
AUTH_DELETE_ACCOUNT: Final = "auth.delete_account"
AUTH_GET_ACCOUNT_DELETION: Final = "auth.get_account_deletion"

USERS_GET: Final = "users.get"
USERS_UPDATE: Final = "users.update"
USERS_PING: Final = "users.ping"
USERS_LIST: Final = "users.list"

ACTIVITY_LIST: Final = "activity.list"

EVENTS_AUTH: Final = "events.auth"
EVENTS_USERS: Final = "events.users"


INBOX_PREFIX: Final = "inbox."
"""Reply inboxes: one Pub/Sub channel per requesting process, ``inbox.<process id>``."""

HEARTBEAT_PREFIX: Final = "heartbeat."
"""Liveness keys written by every handler instance: ``heartbeat.<service>.<instance>``."""

REVOKED_SESSION_PREFIX: Final = "revoked."
"""Keys of revoked sessions, ``revoked.<session id>``: auth writes them, the gateway refuses their tokens."""


def revoked_session(session_id: str) -> str:
    """The key that marks ``session_id`` revoked while its access tokens could still be valid."""
    return f"{REVOKED_SESSION_PREFIX}{session_id}"


def dead_letters(stream: str) -> str:
    """The dead-letter stream of ``stream``."""
    return f"dlq.{stream}"


def replay_stream(group: str, stream: str) -> str:
    """Where ``busway replay`` puts entries of ``stream`` meant for ``group`` alone.

    Every events subscriber of a group also reads its replay stream, so one subscriber
    can rebuild its state from old events without the other groups seeing them again.
    """
    return f"replay.{group}.{stream}"
