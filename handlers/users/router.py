"""users' subscribers: contract in, service call, reply or event out."""

from bus.broker import BusMessage, BuswayBroker, Consumer
from bus.events import decode_event, trace_of
from handlers.users.service import UsersService
from schemas import streams
from schemas.commands import GetUser, ListUsers, Ping, UpdateUser
from schemas.events import AccountDeletionStarted, RegistrationStarted
from schemas.replies import Pong, UserPage, UserProfile


def register_subscribers(broker: BuswayBroker, consumer: Consumer, service: UsersService) -> None:
    """Attach users' command and event subscribers to ``broker``."""

    @consumer.command(broker, streams.USERS_GET, allow={"gateway"})
    async def get_user(cmd: GetUser) -> UserProfile:
        return await service.get(cmd.user_id)

    @consumer.command(broker, streams.USERS_PING, allow={"gateway"})
    async def ping(_: Ping) -> Pong:
        return Pong(service=consumer.service)

    @consumer.command(broker, streams.USERS_UPDATE, allow={"gateway"})
    async def update_user(cmd: UpdateUser, message: BusMessage) -> UserProfile:
        return await service.update(cmd, trace_of(message))

    @consumer.command(broker, streams.USERS_LIST)
    async def list_users(cmd: ListUsers) -> UserPage:
        return await service.list(cmd)

    # Of auth's events, users takes its two saga steps: the rest (every login's
    # UserLoggedIn among them) is acked unread.
    @consumer.events(broker, streams.EVENTS_AUTH, allow={"auth"}, types=(RegistrationStarted, AccountDeletionStarted))
    async def on_auth_event(message: BusMessage) -> None:
        match decode_event(message.body, message.headers):
            case RegistrationStarted() as event:
                await service.on_registration_started(event, message.message_id, trace_of(message))
            case AccountDeletionStarted() as event:
                await service.on_account_deletion_started(event, message.message_id, trace_of(message))
            case _:
                return
