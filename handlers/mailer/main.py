"""Assembles the mailer: ``create_app(settings)`` builds it, nothing is built at import."""

from datetime import timedelta

from bus.broker import create_redis
from bus.runtime import ServiceRuntime
from handlers.mailer import SERVICE
from handlers.mailer.recipients import RedisRecipients
from handlers.mailer.router import mail_subscriber
from handlers.mailer.service import Mailer, MailSettings
from handlers.mailer.settings import MailerSettings
from handlers.mailer.transports import FileTransport, MailTransport, SmtpTransport


def transport_for(settings: MailerSettings) -> MailTransport:
    """The transport the settings choose."""
    if settings.transport == "smtp":
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout,
        )
    return FileTransport(settings.outbox_dir)


def create_app(
    settings: MailerSettings | None = None, *, instance: str | None = None, transport: MailTransport | None = None
) -> ServiceRuntime:
    """The mailer, ready to start; ``transport`` replaces the configured one (tests)."""
    settings = settings or MailerSettings()
    redis = create_redis(settings.bus)
    mailer = Mailer(
        transport or transport_for(settings),
        RedisRecipients(redis, settings.bus, ttl=settings.inbox_ttl),
        MailSettings(
            sender=settings.sender,
            product=settings.product_name,
            reset_url=settings.reset_url,
            max_event_age=timedelta(seconds=settings.max_event_age),
            log_secrets=settings.log_secrets,
        ),
    )
    return mail_subscriber(mailer).runtime(
        SERVICE,
        settings.bus,
        once=True,
        inbox_ttl=settings.inbox_ttl,
        instance=instance,
        redis=redis,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
    )
