"""staff_credentials: staff passwords (argon2) and API tokens (SHA-256), never in clear

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('staff_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_credentials')),
    sa.UniqueConstraint('secret_hash', name='uq_staff_credentials_secret_hash')
    )
    with op.batch_alter_table('staff_credentials', schema=None) as batch_op:
        batch_op.create_index('ix_staff_credentials_staff', ['staff_key', 'kind'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staff_credentials', schema=None) as batch_op:
        batch_op.drop_index('ix_staff_credentials_staff')

    op.drop_table('staff_credentials')
