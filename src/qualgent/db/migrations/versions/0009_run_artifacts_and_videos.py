"""run artifacts (screen recordings, device logs); test cases and runs may record a video

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'run_artifacts',
        sa.Column('run_id', sa.String(length=40), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('content_type', sa.String(length=100), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('storage_key', sa.String(length=600), nullable=False),
        sa.Column('step_index', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('video', 'log')", name=op.f('ck_run_artifacts_kind')),
        sa.ForeignKeyConstraint(
            ['run_id'], ['test_runs.id'],
            name=op.f('fk_run_artifacts_run_id_test_runs'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('run_id', 'attempt', 'name', name=op.f('pk_run_artifacts')),
    )
    # Existing test cases and runs record nothing.
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('record_video', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('record_video', sa.Boolean(), server_default=sa.false(), nullable=False))
    # The retention purge's way to the steps that still have a screenshot.
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.create_index(
            'ix_run_steps_screenshots',
            ['run_id'],
            unique=False,
            sqlite_where=sa.text('screenshot_key IS NOT NULL'),
            postgresql_where=sa.text('screenshot_key IS NOT NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_run_steps_screenshots')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_column('record_video')
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.drop_column('record_video')
    op.drop_table('run_artifacts')
