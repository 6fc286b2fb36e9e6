"""auth's subscribers: contract in, service call, reply or event out."""

from bus.broker import BusMessage, BuswayBroker, Consumer
from bus.events import decode_event, trace_of
from bus.rpc import REPLY_KEY, outcome_key
from handlers.auth.service import AuthService, Notify
from schemas import streams
from schemas.commands import (
    ChangePassword,
    ConfirmPasswordReset,
    DeleteAccount,
    GetAccountDeletion,
    GetJwks,
    GetRegistration,
    ListSessions,
    LogIn,
    LogOut,
    RefreshTokens,
    RegisterUser,
    RequestPasswordReset,
    RevokeSession,
)
from schemas.events import ProfileDeleted, ProfileDeletionFailed, UserCreated, UserCreationFailed
from schemas.replies import AccountDeletion, Done, Jwks, Registration, SessionList, TokenPair


def register_subscribers(broker: BuswayBroker, consumer: Consumer, service: AuthService) -> None:
    """Attach auth's command and event subscribers to ``broker``."""

    @consumer.command(broker, streams.AUTH_REGISTER, allow={"gateway"}, secret=True)
    async def register(cmd: RegisterUser, message: BusMessage) -> Registration:
        notify = Notify(message.reply_to, outcome_key(message.message_id)) if message.reply_to else None
        return await service.register(cmd, trace_of(message), notify, command_id=message.message_id)

    @consumer.command(broker, streams.AUTH_GET_REGISTRATION, allow={"gateway"})
    async def get_registration(cmd: GetRegistration) -> Registration:
        return await service.registration(cmd.registration_id)

    @consumer.command(broker, streams.AUTH_LOGIN, allow={"gateway"}, secret=True)
    async def login(cmd: LogIn, message: BusMessage) -> TokenPair:
        return await service.login(cmd, trace_of(message))

    @consumer.command(broker, streams.AUTH_JWKS, allow={"gateway"})
    async def jwks(_: GetJwks) -> Jwks:
        return service.jwks()

    # The message id is the command's identity: a redelivered entry carries the same one.
    @consumer.command(broker, streams.AUTH_REFRESH, allow={"gateway"}, secret=True)
    async def refresh(cmd: RefreshTokens, message: BusMessage) -> TokenPair:
        return await service.refresh(cmd, trace_of(message), message.message_id)

    @consumer.command(broker, streams.AUTH_LOGOUT, allow={"gateway"})
    async def logout(cmd: LogOut, message: BusMessage) -> Done:
        return await service.logout(cmd, trace_of(message))

    @consumer.command(broker, streams.AUTH_CHANGE_PASSWORD, allow={"gateway"}, secret=True)
    async def change_password(cmd: ChangePassword, message: BusMessage) -> Done:
        return await service.change_password(cmd, trace_of(message), message.message_id)

    # Secret too: an email address is personal data, kept in Redis no longer than needed.
    @consumer.command(broker, streams.AUTH_REQUEST_PASSWORD_RESET, allow={"gateway"}, secret=True)
    async def request_password_reset(cmd: RequestPasswordReset, message: BusMessage) -> Done:
        return await service.request_password_reset(cmd, trace_of(message), message.message_id)

    @consumer.command(broker, streams.AUTH_CONFIRM_PASSWORD_RESET, allow={"gateway"}, secret=True)
    async def confirm_password_reset(cmd: ConfirmPasswordReset, message: BusMessage) -> Done:
        return await service.confirm_password_reset(cmd, trace_of(message), message.message_id)

    @consumer.command(broker, streams.AUTH_LIST_SESSIONS, allow={"gateway"})
    async def list_sessions(cmd: ListSessions) -> SessionList:
        return await service.list_sessions(cmd)

    @consumer.command(broker, streams.AUTH_REVOKE_SESSION, allow={"gateway"})
    async def revoke_session(cmd: RevokeSession, message: BusMessage) -> Done:
        return await service.revoke_session(cmd, trace_of(message))

    @consumer.command(broker, streams.AUTH_DELETE_ACCOUNT)
    async def delete_account(cmd: DeleteAccount, message: BusMessage) -> AccountDeletion:
        notify = Notify(message.reply_to, outcome_key(message.message_id)) if message.reply_to else None
        return await service.delete_account(cmd, trace_of(message), notify, command_id=message.message_id)

    @consumer.command(broker, streams.AUTH_GET_ACCOUNT_DELETION)
    async def get_account_deletion(cmd: GetAccountDeletion) -> AccountDeletion:
        return await service.account_deletion(cmd.deletion_id)

    @consumer.events(broker, streams.EVENTS_USERS, allow={"users"})
    async def on_users_event(message: BusMessage) -> None:
        event = decode_event(message.body, message.headers)
        trace = trace_of(message)
        outcome: tuple[Registration | AccountDeletion, Notify | None] | None
        match event:
            case UserCreated():
                outcome = await service.on_user_created(event, message.message_id, trace)
            case UserCreationFailed():
                outcome = await service.on_user_creation_failed(event, message.message_id, trace)
            case ProfileDeleted():
                outcome = await service.on_profile_deleted(event, message.message_id, trace)
            case ProfileDeletionFailed():
                outcome = await service.on_profile_deletion_failed(event, message.message_id, trace)
            case _:
                return
        if outcome is None:
            return
        state, notify = outcome
        if notify is not None:
            await broker.publish(
                state,
                channel=notify.channel,
                headers={REPLY_KEY: notify.key},
                correlation_id=trace.correlation_id,
            )
