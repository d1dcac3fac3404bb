"""test cases carry files and tags; runs carry env; organisation secrets; nested run steps

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing test cases get no tags; the default is dropped afterwards (the ORM sets [] on new rows).
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.alter_column('tags', server_default=None)
    op.create_table(
        'test_case_files',
        sa.Column('test_case_id', sa.String(length=40), nullable=False),
        sa.Column('path', sa.String(length=300), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['test_case_id'], ['test_cases.id'],
            name=op.f('fk_test_case_files_test_case_id_test_cases'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('test_case_id', 'path', name=op.f('pk_test_case_files')),
    )
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env', sa.JSON(), nullable=True))
    op.create_table(
        'secrets',
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['organization_id'], ['organizations.id'],
            name=op.f('fk_secrets_organization_id_organizations'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('organization_id', 'name', name=op.f('pk_secrets')),
    )
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('depth', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('run_steps', schema=None) as batch_op:
        batch_op.drop_column('depth')
        batch_op.drop_column('parent')
    op.drop_table('secrets')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_column('env')
    op.drop_table('test_case_files')
    with op.batch_alter_table('test_cases', schema=None) as batch_op:
        batch_op.drop_column('tags')
