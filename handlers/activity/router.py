"""activity's subscribers: the trail's events in, and the ``activity.list`` command."""

from bus.broker import BuswayBroker, Consumer
from bus.subscribers import EventContext, Subscriber
from handlers.activity.service import TRAIL_EVENTS, ActivityService
from schemas import streams
from schemas.commands import ListActivity
from schemas.events import AccountDeleted, Event, ProfileDeleted
from schemas.replies import ActivityPage


def trail_subscriber(service: ActivityService) -> Subscriber:
    """The events that make the trail, from auth and users, each recorded once (inbox table)."""
    subscriber = Subscriber(streams.EVENTS_AUTH, streams.EVENTS_USERS)

    @subscriber.on(*TRAIL_EVENTS)
    async def record(event: Event, ctx: EventContext) -> None:
        await service.record(event, ctx.event_id, ctx.occurred_at)

    # The account is gone: so is its trail (the right to erasure covers the audit trail too).
    @subscriber.on(AccountDeleted, ProfileDeleted)
    async def forget(event: AccountDeleted | ProfileDeleted, ctx: EventContext) -> None:
        await service.forget_user(event, ctx.event_id)

    return subscriber


def register_subscribers(broker: BuswayBroker, consumer: Consumer, service: ActivityService) -> None:
    """Attach activity's command and event subscribers to ``broker``."""

    @consumer.command(broker, streams.ACTIVITY_LIST, allow={"gateway"})
    async def list_activity(cmd: ListActivity) -> ActivityPage:
        return await service.list(cmd)

    trail_subscriber(service).attach(broker, consumer)
