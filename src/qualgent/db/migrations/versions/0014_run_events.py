"""run events: every change of a run's status, for the live event stream (GET /v1/jobs/events)

A trigger on ``test_runs`` writes the event (after an INSERT, and after an UPDATE that changes
``status``), so it is written in the transaction that changed the run, by whatever changed it
(runs/transitions.py, run creation, the reaper), and nothing can change a run without its event.
On PostgreSQL the trigger also NOTIFYs ``qualgent_run_events`` (delivered at commit, once per
transaction), which wakes every API process's event poller at once.

SQLite: a later migration that rebuilds ``test_runs`` (``batch_alter_table`` with "move and copy")
drops its triggers; such a migration must create them again (``create_sqlite_triggers`` below).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

CHANNEL = 'qualgent_run_events'

_EVENT_VALUES = """
    NEW.organization_id, NEW.id, NEW.batch_id,
    CASE NEW.status WHEN 'queued' THEN 'run.queued' WHEN 'running' THEN 'run.started' ELSE 'run.finished' END,
    NEW.status, NEW.attempt, NEW.failure_kind, NEW.updated_at
"""
_EVENT_COLUMNS = "organization_id, run_id, batch_id, type, status, attempt, failure_kind, created_at"


def create_sqlite_triggers() -> None:
    op.execute(
        f"""
        CREATE TRIGGER run_events_on_insert AFTER INSERT ON test_runs
        BEGIN
            INSERT INTO run_events ({_EVENT_COLUMNS}) VALUES ({_EVENT_VALUES});
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER run_events_on_update AFTER UPDATE OF status ON test_runs
        WHEN OLD.status IS NOT NEW.status
        BEGIN
            INSERT INTO run_events ({_EVENT_COLUMNS}) VALUES ({_EVENT_VALUES});
        END
        """
    )


def create_postgresql_triggers() -> None:
    op.execute(
        f"""
        CREATE FUNCTION qualgent_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO run_events ({_EVENT_COLUMNS}) VALUES ({_EVENT_VALUES});
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER run_events_on_insert AFTER INSERT ON test_runs "
        "FOR EACH ROW EXECUTE FUNCTION qualgent_run_event()"
    )
    op.execute(
        "CREATE TRIGGER run_events_on_update AFTER UPDATE OF status ON test_runs "
        "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION qualgent_run_event()"
    )


def upgrade() -> None:
    op.create_table(
        'run_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=40), nullable=False),
        sa.Column('run_id', sa.String(length=40), nullable=False),
        sa.Column('batch_id', sa.String(length=40), nullable=True),
        sa.Column('type', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('failure_kind', sa.String(length=20), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['organization_id'], ['organizations.id'],
            name=op.f('fk_run_events_organization_id_organizations'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_run_events')),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.create_index('ix_run_events_organization_id_id', ['organization_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_events_created_at'), ['created_at'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        create_sqlite_triggers()
    else:
        create_postgresql_triggers()


def downgrade() -> None:
    op.execute('DROP TRIGGER IF EXISTS run_events_on_update' + ('' if _sqlite() else ' ON test_runs'))
    op.execute('DROP TRIGGER IF EXISTS run_events_on_insert' + ('' if _sqlite() else ' ON test_runs'))
    if not _sqlite():
        op.execute('DROP FUNCTION IF EXISTS qualgent_run_event()')
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_events_created_at'))
        batch_op.drop_index('ix_run_events_organization_id_id')
    op.drop_table('run_events')


def _sqlite() -> bool:
    return op.get_bind().dialect.name == 'sqlite'
