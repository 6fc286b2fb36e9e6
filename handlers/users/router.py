"""users' subscribers: contract in, service call, reply or event out."""

from faststream.redis import RedisBroker
from faststream.redis.annotations import RedisStreamMessage

from bus.broker import Consumer
from bus.events import decode_event, trace_of
from handlers.users.service import UsersService
from schemas import streams
from schemas.commands import GetUser, Ping, UpdateUser
from schemas.events import RegistrationStarted
from schemas.replies import Pong, UserProfile


def register_subscribers(broker: RedisBroker, consumer: Consumer, service: UsersService) -> None:
    """Attach users' command and event subscribers to ``broker``."""
    workers = consumer.settings.max_workers

    @broker.subscriber(stream=consumer.stream(streams.USERS_GET), max_workers=workers)
    async def get_user(cmd: GetUser) -> UserProfile:
        return await service.get(cmd.user_id)

    @broker.subscriber(stream=consumer.stream(streams.USERS_PING), max_workers=workers)
    async def ping(_: Ping) -> Pong:
        return Pong(service=consumer.service)

    @broker.subscriber(stream=consumer.stream(streams.USERS_UPDATE), max_workers=workers)
    async def update_user(cmd: UpdateUser, message: RedisStreamMessage) -> UserProfile:
        return await service.update(cmd, trace_of(message))

    @broker.subscriber(stream=consumer.stream(streams.EVENTS_AUTH), no_reply=True)  # type: ignore[untyped-decorator]
    async def on_auth_event(message: RedisStreamMessage) -> None:
        match decode_event(message.body, message.headers):
            case RegistrationStarted() as event:
                await service.on_registration_started(event, message.message_id, trace_of(message))
            case _:
                return
