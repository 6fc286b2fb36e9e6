"""roles: a space-separated roles column on credentials (the admin role)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('roles', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False, server_default='')
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_column('roles')
