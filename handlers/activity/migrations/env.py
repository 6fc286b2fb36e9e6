"""Alembic environment of the activity service's database."""

from alembic import context

from db.migrations import run_env
from handlers.activity.models import ActivityBase

run_env(context, ActivityBase.metadata)
