"""the LLM tier's record: each call, its latency and pick, and a guide's later verdict

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 15:35:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('llm_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('picked', sa.String(length=64), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('failure', sa.String(length=255), nullable=True),
    sa.Column('answered', sa.Boolean(), nullable=False),
    sa.Column('asked_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('guide_intent', sa.String(length=64), nullable=True),
    sa.Column('judged_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'],
                            name=op.f('fk_llm_calls_message_id_messages'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_llm_calls'))
    )
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.create_index('ix_llm_calls_message_id', ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_llm_calls_message_id')
    op.drop_table('llm_calls')
