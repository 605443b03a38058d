"""the console: hand-off state on contacts (waiting since, the guide who joined); FAQ tier and confidence on messages

Revision ID: 0008
Revises: 0011
Create Date: 2026-11-23 15:20:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0008'
down_revision: Union[str, None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('contacts') as batch:
        batch.add_column(sa.Column('handoff_at', storage.types.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('handoff_guide', sa.String(length=64), nullable=True))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('tier', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('confidence', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('confidence')
        batch.drop_column('tier')
    with op.batch_alter_table('contacts') as batch:
        batch.drop_column('handoff_guide')
        batch.drop_column('handoff_at')
