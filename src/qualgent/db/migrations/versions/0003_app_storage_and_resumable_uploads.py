"""app storage and resumable uploads (issue 4)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('organization_id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=600), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('ref_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_blobs_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organization_id', 'sha256', name=op.f('pk_blobs'))
    )
    op.create_table('resumable_uploads',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('organization_id', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=40), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('app_name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('os', sa.String(length=10), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('app_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['app_id'], ['app_files.id'], name=op.f('fk_resumable_uploads_app_id_app_files'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_resumable_uploads_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_resumable_uploads_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resumable_uploads'))
    )
    with op.batch_alter_table('resumable_uploads', schema=None) as batch_op:
        batch_op.create_index('ix_resumable_uploads_expires', ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_resumable_uploads_organization_id'), ['organization_id'], unique=False)

    with op.batch_alter_table('app_files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))

    # Apps stored before content addressing: one blob per (organisation, sha256) they already use, with
    # their live count, so that purge and dedup treat them like new uploads. Their objects stay where
    # they are (storage_key on the blob is the first app's).
    op.execute(
        "INSERT INTO blobs (organization_id, sha256, storage_key, size, ref_count, created_at, updated_at) "
        "SELECT organization_id, sha256, MIN(storage_key), MAX(file_size), COUNT(*), MIN(created_at), MIN(created_at) "
        "FROM app_files GROUP BY organization_id, sha256"
    )


def downgrade() -> None:
    with op.batch_alter_table('app_files', schema=None) as batch_op:
        batch_op.drop_column('purged_at')

    with op.batch_alter_table('resumable_uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resumable_uploads_organization_id'))
        batch_op.drop_index('ix_resumable_uploads_expires')

    op.drop_table('resumable_uploads')
    op.drop_table('blobs')
