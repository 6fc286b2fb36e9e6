"""The auth service: credentials, registrations, sessions, tokens and signing keys."""

SERVICE = "auth"
