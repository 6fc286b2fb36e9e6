"""Assembles the users service: ``create_app(settings)`` builds it, nothing is built at import."""

from pathlib import Path

from bus.broker import Consumer, create_broker, create_redis, instance_id
from bus.metrics import HandlerMetrics, MetricsServer
from bus.outbox import OutboxRelay
from bus.runtime import ServiceRuntime
from db.engine import create_engine, is_outage, session_factory
from db.eventlog import EventLogPruner
from db.migrations import migrate_at_start
from db.outbox import SqlOutboxStore
from handlers.users import SERVICE
from handlers.users.models import Outbox
from handlers.users.router import register_subscribers
from handlers.users.service import UsersService
from handlers.users.settings import UsersSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: UsersSettings | None = None, *, instance: str | None = None) -> ServiceRuntime:
    """The users service, ready to start."""
    settings = settings or UsersSettings()
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    read_engine = (
        create_engine(settings.database_read_url, pool_size=settings.database_pool_size)
        if settings.database_read_url and settings.database_read_url != settings.database_url
        else engine
    )
    sessions = session_factory(engine)
    redis = create_redis(settings.bus)
    outbox = SqlOutboxStore(sessions, Outbox)
    relay = OutboxRelay(outbox, settings.bus, signer=settings.bus.signer(SERVICE))
    pruner = EventLogPruner(
        sessions,
        Outbox,
        retention_days=settings.event_log_retention_days,
        interval=settings.event_log_prune_interval,
    )
    service = UsersService(sessions, session_factory(read_engine), events_committed=relay.wake)
    consumer = Consumer(settings.bus, SERVICE, instance or instance_id(SERVICE))
    metrics = HandlerMetrics(settings.bus)
    broker = create_broker(settings.bus, SERVICE, consumer, outage=is_outage, metrics=metrics)
    register_subscribers(broker, consumer, service)

    async def dispose() -> None:
        await engine.dispose()
        if read_engine is not engine:
            await read_engine.dispose()

    return ServiceRuntime(
        service=SERVICE,
        broker=broker,
        redis=redis,
        consumer=consumer,
        components=[relay, pruner],
        metrics=MetricsServer(
            metrics,
            redis,
            consumer,
            host=settings.metrics_host,
            port=settings.metrics_port,
            backlog=outbox.backlog,
        ),
        before_start=[migrate_at_start(MIGRATIONS, settings.database_url, enabled=settings.migrate_at_start)],
        after_stop=[dispose],
    )
