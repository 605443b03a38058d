"""inbox and platform state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 00:21:41.782760
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import storage.types


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    
    op.create_table('inbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('dedupe_key', sa.String(length=191), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('received_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox')),
    sa.UniqueConstraint('channel', 'dedupe_key', name='uq_inbox_dedupe')
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_pending', ['processed_at', 'id'], unique=False)

    op.create_table('kv',
    sa.Column('key', sa.String(length=191), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_kv'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('platform_ref', sa.String(length=191), nullable=True))
        batch_op.add_column(sa.Column('awaiting_until', storage.types.UTCDateTime(timezone=True), nullable=True))

    


def downgrade() -> None:
    
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('awaiting_until')
        batch_op.drop_column('platform_ref')

    op.drop_table('kv')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_pending')

    op.drop_table('inbox')
    
