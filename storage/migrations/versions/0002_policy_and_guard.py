"""policy and guard

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:35:18.929658
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import storage.types


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    
    op.create_table('guard_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('group_id', sa.String(length=128), nullable=False),
    sa.Column('member_id', sa.String(length=128), nullable=False),
    sa.Column('message_ref', sa.String(length=191), nullable=True),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('strike', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('excerpt', sa.Text(), nullable=False),
    sa.Column('at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guard_events'))
    )
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.create_index('ix_guard_events_member', ['channel', 'group_id', 'member_id', 'at'], unique=False)

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('action', sa.String(length=16), server_default='say', nullable=False))
        batch_op.add_column(sa.Column('target_id', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('target_ref', sa.String(length=191), nullable=True))
        batch_op.add_column(sa.Column('until', storage.types.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_due_at', storage.types.UTCDateTime(timezone=True), nullable=True))
        # the policy asks "this customer's due touches": lead with the customer, not the status
        batch_op.drop_index('ix_touches_contact')
        batch_op.create_index('ix_touches_contact', ['contact_id', 'status', 'due_at'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_contact')
        batch_op.create_index('ix_touches_contact', ['contact_id', 'status'], unique=False)
        batch_op.drop_column('first_due_at')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('until')
        batch_op.drop_column('target_ref')
        batch_op.drop_column('target_id')
        batch_op.drop_column('action')

    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.drop_index('ix_guard_events_member')

    op.drop_table('guard_events')
    
