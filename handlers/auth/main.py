"""Assembles the auth service: ``create_app(settings)`` builds it, nothing is built at import."""

from pathlib import Path

from bus.broker import Consumer, create_broker, create_redis, instance_id
from bus.metrics import HandlerMetrics, MetricsServer
from bus.outbox import OutboxRelay
from bus.runtime import ServiceRuntime
from db.engine import create_engine, is_outage, session_factory
from db.eventlog import EventLogPruner
from db.migrations import migrate_at_start
from db.outbox import SqlOutboxStore
from handlers.auth import SERVICE
from handlers.auth.keys import KeyFolderWatcher, KeyRing
from handlers.auth.models import Outbox
from handlers.auth.passwords import PasswordHasher
from handlers.auth.revocations import RevocationList
from handlers.auth.router import register_subscribers
from handlers.auth.service import AuthService, TokenSettings
from handlers.auth.settings import AuthSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def load_keys(settings: AuthSettings) -> KeyRing:
    """The signing keys from config; generated in development when there are none."""
    pem = settings.signing_key.get_secret_value() if settings.signing_key else None
    return KeyRing.load(pem, settings.keys_dir, generate=settings.environment != "production")


def create_app(settings: AuthSettings | None = None, *, instance: str | None = None) -> ServiceRuntime:
    """The auth service, ready to start."""
    settings = settings or AuthSettings()
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
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
    keys = load_keys(settings)
    service = AuthService(
        sessions,
        PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.hashing_concurrency,
            niceness=settings.hashing_niceness,
            release_after=settings.hashing_release_after,
        ),
        keys,
        TokenSettings(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl=settings.access_token_ttl,
            refresh_ttl=settings.refresh_token_ttl,
            reset_ttl=settings.password_reset_ttl,
        ),
        events_committed=relay.wake,
        sessions_revoked=RevocationList(redis, settings.bus).publish,
    )
    consumer = Consumer(settings.bus, SERVICE, instance or instance_id(SERVICE))
    metrics = HandlerMetrics(settings.bus)
    broker = create_broker(settings.bus, SERVICE, consumer, outage=is_outage, metrics=metrics)
    register_subscribers(broker, consumer, service)

    return ServiceRuntime(
        service=SERVICE,
        broker=broker,
        redis=redis,
        consumer=consumer,
        components=[relay, pruner, KeyFolderWatcher(keys, settings.keys_reload_interval)],
        metrics=MetricsServer(
            metrics,
            redis,
            consumer,
            host=settings.metrics_host,
            port=settings.metrics_port,
            backlog=outbox.backlog,
        ),
        before_start=[migrate_at_start(MIGRATIONS, settings.database_url, enabled=settings.migrate_at_start)],
        after_stop=[engine.dispose],
    )
