"""indexes read in order: claims (priority descending, then oldest) and status-filtered job lists

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_test_runs_org_status")
        batch_op.create_index("ix_test_runs_org_status", ["organization_id", "status", "id"], unique=False)
        batch_op.drop_index("ix_test_runs_queue")
        batch_op.create_index(
            "ix_test_runs_queue", ["status", sa.text("priority_rank DESC"), "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("test_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_test_runs_org_status")
        batch_op.create_index("ix_test_runs_org_status", ["organization_id", "status"], unique=False)
        batch_op.drop_index("ix_test_runs_queue")
        batch_op.create_index("ix_test_runs_queue", ["status", "priority_rank", "id"], unique=False)
