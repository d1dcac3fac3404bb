"""agents (and their devices) belong to an organisation, or are shared

An agent created for an organisation claims only that organisation's runs, and its devices count only
for that organisation's runs; an agent without one (the embedded agent, or one the operator created
with --shared) serves every organisation. Devices carry their agent's organisation, so the queries
that count devices for a run need no join. Existing agents and devices: shared (as they behaved).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('organization_id', sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_agents_organization_id_organizations'),
            'organizations',
            ['organization_id'],
            ['id'],
            ondelete='CASCADE',
        )
        batch_op.create_index(batch_op.f('ix_agents_organization_id'), ['organization_id'], unique=False)
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('organization_id', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('organization_id')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_organization_id'))
        batch_op.drop_constraint(batch_op.f('fk_agents_organization_id_organizations'), type_='foreignkey')
        batch_op.drop_column('organization_id')
