"""touches by enrolment: a journey's own touches (conditions, exits, cancellations) without a table scan

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-23 19:30:00
"""
from typing import Sequence, Union

from alembic import op

revision: str = '0012'
down_revision: Union[str, None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index('ix_touches_enrolment', ['enrolment_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_enrolment')
