"""Alembic environment of the auth service's database."""

from alembic import context

from db.migrations import run_env
from handlers.auth.models import AuthBase

run_env(context, AuthBase.metadata)
