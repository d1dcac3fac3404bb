"""late-bound runs: device targets and matches, device tags; a queue order key (longest first)

Every run gets a target (what it may run on). Runs from before keep their device: each distinct
(device_name, platform, os_version) of test_runs becomes a target of that one device, matched against
the devices registered now. The claim order index gains queue_order (existing runs: 0).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _version(value: str) -> str:
    # As devices.catalogue.normalise_version at the time of writing (14 = 14.0).
    parts = value.strip().split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def _pinned_target(name: str, platform: str, os_version: str) -> tuple[str, str]:
    """(id, canonical spec) of the target of one named device, as devices/selectors.pinned makes it."""
    spec = json.dumps(
        {"devices": [[name.strip().casefold(), _version(os_version)]], "platform": platform.lower()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "tgt_" + hashlib.sha256(spec.encode()).hexdigest()[:32], spec


def upgrade() -> None:
    op.create_table(
        'device_targets',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('platform', sa.String(length=20), nullable=False),
        sa.Column('spec', sa.Text(), nullable=False),
        sa.Column('label', sa.String(length=300), nullable=True),
        sa.Column('selector', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_device_targets')),
    )
    op.create_table(
        'device_matches',
        sa.Column('device_id', sa.String(length=40), nullable=False),
        sa.Column('target_id', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['device_id'], ['devices.id'], name=op.f('fk_device_matches_device_id_devices'), ondelete='CASCADE'
        ),
        sa.ForeignKeyConstraint(
            ['target_id'], ['device_targets.id'],
            name=op.f('fk_device_matches_target_id_device_targets'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('device_id', 'target_id', name=op.f('pk_device_matches')),
    )
    with op.batch_alter_table('device_matches', schema=None) as batch_op:
        batch_op.create_index('ix_device_matches_target', ['target_id', 'device_id'], unique=False)

    # Existing devices declare no tags; the default is dropped afterwards (the ORM sets [] on new rows).
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.alter_column('tags', server_default=None)

    # The claim-order indexes go first: SQLite's table rebuild below would reflect their DESC columns
    # as columns named "priority_rank DESC".
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_test_runs_queue')
        batch_op.drop_index('ix_test_runs_org_queue')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_order', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('target_id', sa.String(length=40), nullable=True))

    # Every existing run keeps its device: a target of that one device, matched against the devices
    # registered now (an exact name, platform and OS version, as the claim compared them before).
    bind = op.get_bind()
    now = datetime.now(UTC)
    targets = sa.table(
        'device_targets',
        sa.column('id', sa.String),
        sa.column('platform', sa.String),
        sa.column('spec', sa.Text),
        sa.column('created_at', sa.DateTime(timezone=True)),
        sa.column('updated_at', sa.DateTime(timezone=True)),
    )
    matches = sa.table(
        'device_matches',
        sa.column('device_id', sa.String),
        sa.column('target_id', sa.String),
        sa.column('created_at', sa.DateTime(timezone=True)),
    )
    runs = sa.table(
        'test_runs',
        sa.column('device_name', sa.String),
        sa.column('device_platform', sa.String),
        sa.column('device_os_version', sa.String),
        sa.column('target_id', sa.String),
    )
    combos = bind.execute(
        sa.select(runs.c.device_name, runs.c.device_platform, runs.c.device_os_version).distinct()
    ).all()
    devices = bind.execute(sa.text("SELECT id, name, platform, os_version FROM devices")).all()
    made: dict[str, tuple[str, str]] = {}
    for name, platform, os_version in combos:
        target_id, spec = _pinned_target(name, platform, os_version)
        if target_id not in made:
            made[target_id] = (platform.lower(), spec)
            bind.execute(
                sa.insert(targets).values(
                    id=target_id, platform=platform.lower(), spec=spec, created_at=now, updated_at=now
                )
            )
            wanted = (name.strip().casefold(), platform.lower(), _version(os_version))
            fits = [
                {"device_id": d_id, "target_id": target_id, "created_at": now}
                for d_id, d_name, d_platform, d_os in devices
                if (d_name.strip().casefold(), d_platform.lower(), _version(d_os)) == wanted
            ]
            if fits:
                bind.execute(sa.insert(matches), fits)
        bind.execute(
            sa.update(runs)
            .where(
                runs.c.device_name == name,
                runs.c.device_platform == platform,
                runs.c.device_os_version == os_version,
            )
            .values(target_id=target_id)
        )

    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.alter_column('target_id', existing_type=sa.String(length=40), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_test_runs_target_id_device_targets'), 'device_targets', ['target_id'], ['id']
        )
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_test_runs_queue', ['status', sa.text('priority_rank DESC'), 'queue_order', 'id'], unique=False
        )
        batch_op.create_index(
            'ix_test_runs_org_queue',
            ['organization_id', 'status', sa.text('priority_rank DESC'), 'queue_order', 'id'],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_test_runs_org_queue')
        batch_op.drop_index('ix_test_runs_queue')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_test_runs_target_id_device_targets', type_='foreignkey')
        batch_op.drop_column('target_id')
        batch_op.drop_column('queue_order')
    with op.batch_alter_table('test_runs', schema=None) as batch_op:
        batch_op.create_index('ix_test_runs_queue', ['status', sa.text('priority_rank DESC'), 'id'], unique=False)
        batch_op.create_index(
            'ix_test_runs_org_queue', ['organization_id', 'status', sa.text('priority_rank DESC'), 'id'], unique=False
        )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('tags')
    with op.batch_alter_table('device_matches', schema=None) as batch_op:
        batch_op.drop_index('ix_device_matches_target')
    op.drop_table('device_matches')
    op.drop_table('device_targets')
