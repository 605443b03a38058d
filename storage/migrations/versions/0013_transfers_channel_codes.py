"""hand-over between guides (transfers), 渠道活码 (channel_codes), listening and paused journeys

Revision ID: 0013
Revises: 0008
Create Date: 2026-11-23 15:30:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0013'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('transfers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('from_guide', sa.String(length=64), nullable=False),
    sa.Column('to_guide', sa.String(length=64), nullable=False),
    sa.Column('departed', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('checks', sa.Integer(), nullable=False),
    sa.Column('next_check_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('requested_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('settled_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_transfers_contact_id_contacts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfers'))
    )
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.create_index('ix_transfers_waiting', ['status', 'next_check_at'], unique=False)
        batch_op.create_index('ix_transfers_contact', ['contact_id', 'requested_at'], unique=False)

    op.create_table('channel_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('guides', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('config_id', sa.String(length=128), nullable=True),
    sa.Column('link', sa.Text(), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_codes')),
    sa.UniqueConstraint('name', name='uq_channel_codes_name'),
    sa.UniqueConstraint('state', name='uq_channel_codes_state')
    )
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('listening_step', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('listening_until', storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('paused_at', storage.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_column('paused_at')
        batch_op.drop_column('listening_until')
        batch_op.drop_column('listening_step')
    op.drop_table('channel_codes')
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_index('ix_transfers_contact')
        batch_op.drop_index('ix_transfers_waiting')
    op.drop_table('transfers')
