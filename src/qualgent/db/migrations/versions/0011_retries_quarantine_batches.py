"""test retries, quarantine and flaky-test settings, batches of runs

Runs get test retries (allowed / used, apart from infrastructure attempts), the device a retry should
avoid (the one that failed it) and until when, their batch, and two flags taken when queued
(the test case was quarantined; the organisation quarantines flaky tests automatically). Attempts keep
their own failure. Test cases get retries and quarantine; organisations their settings. Existing rows:
no retries, nothing quarantined, no batch.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'batches',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('group_key', sa.String(length=200), nullable=True),
        sa.Column('superseded_by', sa.String(length=40), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['organization_id'], ['organizations.id'],
            name=op.f('fk_batches_organization_id_organizations'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_batches_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batches')),
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_group', ['organization_id', 'group_key', 'id'], unique=False)

    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('default_test_retries', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('auto_quarantine', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('quarantine_exit_passes', sa.Integer(), server_default='5', nullable=False))

    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retries', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('quarantine_source', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('quarantine_ended_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure_kind', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('failure_step', sa.Integer(), nullable=True))

    # The claim-order indexes go first: SQLite's table rebuild below would reflect their DESC columns
    # as columns named "priority_rank DESC" (as in 0010).
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_test_runs_queue')
        batch_op.drop_index('ix_test_runs_org_queue')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test_retries', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('test_retries_used', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('retry_avoid_device_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('retry_avoid_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('batch_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('quarantined', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('auto_quarantine', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_test_runs_batch_id_batches'), 'batches', ['batch_id'], ['id'])
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_test_runs_queue', ['status', sa.text('priority_rank DESC'), 'queue_order', 'id'], unique=False
        )
        batch_op.create_index(
            'ix_test_runs_org_queue',
            ['organization_id', 'status', sa.text('priority_rank DESC'), 'queue_order', 'id'],
            unique=False,
        )
        batch_op.create_index('ix_test_runs_batch', ['batch_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_test_runs_batch')
        batch_op.drop_index('ix_test_runs_org_queue')
        batch_op.drop_index('ix_test_runs_queue')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_test_runs_batch_id_batches', type_='foreignkey')
        batch_op.drop_column('auto_quarantine')
        batch_op.drop_column('quarantined')
        batch_op.drop_column('batch_id')
        batch_op.drop_column('retry_avoid_until')
        batch_op.drop_column('retry_avoid_device_id')
        batch_op.drop_column('test_retries_used')
        batch_op.drop_column('test_retries')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_test_runs_queue', ['status', sa.text('priority_rank DESC'), 'queue_order', 'id'], unique=False
        )
        batch_op.create_index(
            'ix_test_runs_org_queue',
            ['organization_id', 'status', sa.text('priority_rank DESC'), 'queue_order', 'id'],
            unique=False,
        )
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('failure_step')
        batch_op.drop_column('failure_kind')
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.drop_column('quarantine_ended_at')
        batch_op.drop_column('quarantine_reason')
        batch_op.drop_column('quarantine_source')
        batch_op.drop_column('quarantined_at')
        batch_op.drop_column('retries')
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.drop_column('quarantine_exit_passes')
        batch_op.drop_column('auto_quarantine')
        batch_op.drop_column('default_test_retries')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_group')
    op.drop_table('batches')
