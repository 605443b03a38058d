"""handoff

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:16:25.298475
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import storage.types


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handoff_until', storage.types.UTCDateTime(timezone=True), nullable=True))

    


def downgrade() -> None:
    
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('handoff_until')

    
