"""account deletion: the deletion sagas and their state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('account_deletions',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('reason_message', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('notify_to', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('notify_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('account_deletions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_deletions_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('account_deletions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_deletions_user_id'))

    op.drop_table('account_deletions')
