"""Databases: engines and sessions per service, outbox and inbox tables, migrations."""
