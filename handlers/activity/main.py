"""Assembles the activity service: ``create_app(settings)`` builds it, nothing is built at import."""

from pathlib import Path

from bus.broker import Consumer, create_broker, create_redis, instance_id
from bus.metrics import HandlerMetrics, MetricsServer
from bus.runtime import ServiceRuntime
from db.engine import create_engine, is_outage, session_factory
from db.migrations import migrate_at_start
from handlers.activity import SERVICE
from handlers.activity.router import register_subscribers
from handlers.activity.service import ActivityService
from handlers.activity.settings import ActivitySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ActivitySettings | None = None, *, instance: str | None = None) -> ServiceRuntime:
    """The activity service, ready to start."""
    settings = settings or ActivitySettings()
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    service = ActivityService(session_factory(engine))
    redis = create_redis(settings.bus)
    consumer = Consumer(settings.bus, SERVICE, instance or instance_id(SERVICE))
    metrics = HandlerMetrics(settings.bus)
    broker = create_broker(settings.bus, SERVICE, consumer, outage=is_outage, metrics=metrics)
    register_subscribers(broker, consumer, service)
    return ServiceRuntime(
        service=SERVICE,
        broker=broker,
        redis=redis,
        consumer=consumer,
        # No outbox: activity publishes no events, so there is no backlog to report.
        metrics=MetricsServer(metrics, redis, consumer, host=settings.metrics_host, port=settings.metrics_port),
        before_start=[migrate_at_start(MIGRATIONS, settings.database_url, enabled=settings.migrate_at_start)],
        after_stop=[engine.dispose],
    )


async def reset(settings: ActivitySettings) -> tuple[int, int]:
    """Delete the trail and the inbox (to rebuild by replay); (entries, inbox rows) deleted."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await ActivityService(session_factory(engine)).reset()
    finally:
        await engine.dispose()
