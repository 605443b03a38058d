"""the customer lifecycle: business events, the points ledger, churn records; contacts.member_id and level

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-23 15:10:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0011'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('contacts') as batch:
        batch.add_column(sa.Column('member_id', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('level', sa.String(length=32), nullable=True))
        batch.create_index('ix_contacts_member_id', ['member_id'], unique=False)
    op.create_table('business_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=191), nullable=False),
    sa.Column('type', sa.String(length=80), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('amount', sa.Float(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_business_events_contact_id_contacts'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_business_events')),
    sa.UniqueConstraint('event_id', name='uq_business_events_event_id')
    )
    with op.batch_alter_table('business_events') as batch:
        batch.create_index('ix_business_events_contact', ['contact_id', 'type'], unique=False)
    op.create_table('points_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('delta', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('ref', sa.String(length=191), nullable=False),
    sa.Column('at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_points_ledger_contact_id_contacts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_ledger')),
    sa.UniqueConstraint('ref', name='uq_points_ledger_ref')
    )
    with op.batch_alter_table('points_ledger') as batch:
        batch.create_index('ix_points_ledger_contact', ['contact_id', 'at'], unique=False)
    op.create_table('churn_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('guide_key', sa.String(length=64), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('reachable', sa.Boolean(), nullable=False),
    sa.Column('at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_churn_records_contact_id_contacts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_churn_records'))
    )
    with op.batch_alter_table('churn_records') as batch:
        batch.create_index('ix_churn_records_at', ['at'], unique=False)


def downgrade() -> None:
    op.drop_table('churn_records')
    op.drop_table('points_ledger')
    op.drop_table('business_events')
    with op.batch_alter_table('contacts') as batch:
        batch.drop_index('ix_contacts_member_id')
        batch.drop_column('level')
        batch.drop_column('member_id')
