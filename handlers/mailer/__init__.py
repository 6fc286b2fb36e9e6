"""The mailer service: a welcome mail when an account is ready, a link when a reset is asked for."""

SERVICE = "mailer"
