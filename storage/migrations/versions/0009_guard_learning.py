"""guard learning: staff samples, review status and score on guard events, questions to the bot

Revision ID: 0009
Revises: 0013
Create Date: 2026-11-23 15:30:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0009'
down_revision: Union[str, None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='acted', nullable=False))
        batch_op.add_column(sa.Column('score', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('message_row', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reviewed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reviewed_at', storage.types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mentions_bot', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('guard_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('spam', sa.Boolean(), nullable=False),
    sa.Column('staff_key', sa.String(length=64), nullable=False),
    sa.Column('guard_event_id', sa.Integer(), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['guard_event_id'], ['guard_events.id'],
                            name=op.f('fk_guard_samples_guard_event_id_guard_events'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guard_samples'))
    )
    with op.batch_alter_table('guard_samples', schema=None) as batch_op:
        batch_op.create_index('ix_guard_samples_spam', ['spam', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('guard_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_guard_samples_spam')
    op.drop_table('guard_samples')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('mentions_bot')
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('reviewed_by')
        batch_op.drop_column('message_row')
        batch_op.drop_column('score')
        batch_op.drop_column('status')
