"""index for a queued run's position: the organisation's queued runs in claim order, counted off the index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_test_runs_org_queue",
            ["organization_id", "status", sa.text("priority_rank DESC"), "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("test_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_test_runs_org_queue")
