"""Alembic environment of the users service's database."""

from alembic import context

from db.migrations import run_env
from handlers.users.models import UsersBase

run_env(context, UsersBase.metadata)
