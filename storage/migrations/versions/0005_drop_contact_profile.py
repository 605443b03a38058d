"""drop contacts.profile (written, never read)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:30:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('contacts') as batch:
        batch.drop_column('profile')


def downgrade() -> None:
    with op.batch_alter_table('contacts') as batch:
        batch.add_column(sa.Column('profile', sa.JSON(), nullable=True))
