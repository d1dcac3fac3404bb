"""Every table, in one module. Relationships are ``lazy="raise"``: load what you need explicitly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from qualgent.db.base import Base, TimestampMixin, UTCDateTime, utcnow

ID = String(40)


class Organization(TimestampMixin, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Runs this organisation may execute at once; NULL means the server's default.
    max_parallel_runs: Mapped[int | None] = mapped_column(Integer)
    # Runs of this organisation executing now. Kept by runs/transitions.py in the same statement that
    # moves a run into or out of `running`, so concurrent claims serialise on this row and the cap holds.
    running_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Settings the organisation changes itself (GET/PATCH /v1/organization/settings, issue 7):
    # test retries of a run whose request and test case say none; flaky test cases quarantined as soon
    # as they are found flaky; passes in a row (first attempt) that take a test case out of quarantine
    # (0: only by hand).
    default_test_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    auto_quarantine: Mapped[bool] = mapped_column(default=False, server_default=false())
    quarantine_exit_passes: Mapped[int] = mapped_column(Integer, default=5, server_default="5")


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Set by the dashboard's sign-in; API keys do not need it.
    password_hash: Mapped[str | None] = mapped_column(String(300))


class ApiKey(TimestampMixin, Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # The first characters of the key, shown in lists so a person can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(20))
    # SHA-256 of the whole key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100), default="read write")
    # Requests per second; NULL means the server's default.
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="raise")
    organization: Mapped[Organization] = relationship(lazy="raise")


class AppFile(TimestampMixin, Base):
    __tablename__ = "app_files"
    __table_args__ = (Index("ix_app_files_org_live", "organization_id", "deleted_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    app_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    os: Mapped[str] = mapped_column(String(10))
    original_name: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(400))
    # Where the bytes live, relative to the storage root.
    storage_key: Mapped[str] = mapped_column(String(600))
    file_path: Mapped[str] = mapped_column(String(600))
    file_size: Mapped[int] = mapped_column(BigInteger)
    file_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    package_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Issue 4: set when a soft-deleted app's reference to its content blob is released (retention purge).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="raise")


class Category(TimestampMixin, Base):
    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")


class TestCase(TimestampMixin, Base):
    __test__ = False  # not a pytest class
    __tablename__ = "test_cases"
    __table_args__ = (Index("ix_test_cases_org_live", "organization_id", "deleted_at", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    category_id: Mapped[str | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(10), default="active")
    # The YAML text of the steps, stored exactly as given.
    flow: Mapped[str] = mapped_column(Text, default="")
    # Execution timeout for this test case's runs; NULL means the server's default.
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    # The flow's `tags:` (run-all filters on them), kept when the flow is stored. Migration 0008 gave
    # existing rows []; no server default stays (PostgreSQL cannot compare json values, so alembic's
    # default comparison fails on one).
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Every run of this test case records a video of the device's screen (a run may ask for one too).
    record_video: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Test retries of its runs when the request says none; NULL means the organisation's default.
    retries: Mapped[int | None] = mapped_column(Integer)
    # In quarantine: its runs still run and are reported, but never fail a gate (a batch's verdict, the
    # CLI's exit code). `quarantine_source` is manual | flaky (put there by automatic quarantine).
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    quarantine_source: Mapped[str | None] = mapped_column(String(10))
    quarantine_reason: Mapped[str | None] = mapped_column(String(500))
    # When it last left quarantine: automatic quarantine weighs only what its runs showed since.
    quarantine_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    category: Mapped[Category | None] = relationship(lazy="raise")


class TestCaseFile(TimestampMixin, Base):
    """A file a test case's flow uses (subflow, script, media), under its path relative to the flow."""

    __test__ = False  # not a pytest class
    __tablename__ = "test_case_files"

    test_case_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(300), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)


class TestRun(TimestampMixin, Base):
    __test__ = False  # not a pytest class
    __tablename__ = "test_runs"
    __table_args__ = (
        Index("ix_test_runs_org_id", "organization_id", "id"),
        # A status-filtered page (newest first) read straight off the index, not sorted from every match.
        Index("ix_test_runs_org_status", "organization_id", "status", "id"),
        Index("ix_test_runs_latest", "test_case_id", "status", "finished_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    test_case_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id"))
    app_id: Mapped[str] = mapped_column(ForeignKey("app_files.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))

    # The device: the one asked for while queued (a late-bound run shows its target's label), the one
    # that took it once claimed (transitions.claim writes these); device_id is that device.
    device_name: Mapped[str] = mapped_column(String(200))
    device_platform: Mapped[str] = mapped_column(String(20))
    device_os_version: Mapped[str] = mapped_column(String(40))
    device_orientation: Mapped[str] = mapped_column(String(20), default="portrait")
    device_id: Mapped[str | None] = mapped_column(String(200))
    # What the run may run on (devices/selectors.py): one named device, or a platform or selector that
    # any free matching device satisfies when it claims the run.
    target_id: Mapped[str] = mapped_column(ForeignKey("device_targets.id"))

    status: Mapped[str] = mapped_column(String(20), default="queued")
    priority: Mapped[str] = mapped_column(String(10), default="medium")
    priority_rank: Mapped[int] = mapped_column(Integer, default=1)
    # The claim order within a priority, lowest first, set when the run is queued: the queue time
    # (milliseconds << 20) plus the run's place in its batch; run-all places the longest expected runs
    # first. Runs from before migration 0010 have 0 (they come first, oldest first by id).
    queue_order: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    progress: Mapped[int] = mapped_column(Integer, default=0)

    # Execution: attempts, the agent holding the run and until when.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    agent_id: Mapped[str | None] = mapped_column(String(40))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Steps of the flow being executed (set at claim), for progress.
    step_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    failure_kind: Mapped[str | None] = mapped_column(String(20))
    failure_message: Mapped[str | None] = mapped_column(Text)
    failure_step: Mapped[int | None] = mapped_column(Integer)
    # Values passed for the run (`env` of the request), handed to the agent with the organisation's secrets.
    env: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The agent records the device's screen: the request asked for it or the test case always does.
    record_video: Mapped[bool] = mapped_column(default=False, server_default=false())

    # Test retries (issue 7), apart from the infrastructure attempts above: a run that fails as `test`
    # is queued again (a new attempt of the same run) while `test_retries_used < test_retries`.
    test_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    test_retries_used: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A test retry prefers another device than the one that failed it: until `retry_avoid_until` a
    # claim does not give the run to that device (NULL: any device, e.g. when it is the only one that fits).
    retry_avoid_device_id: Mapped[str | None] = mapped_column(String(40))
    retry_avoid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The run / run-all request that queued it (NULL for runs from before batches).
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    # Its test case was in quarantine when it was queued: it never fails a gate.
    quarantined: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Its organisation quarantines flaky test cases automatically (as it was when the run was queued):
    # the run's end is checked for flakiness. Runs of other organisations cost their end nothing.
    auto_quarantine: Mapped[bool] = mapped_column(default=False, server_default=false())

    test_case: Mapped[TestCase] = relationship(lazy="raise")
    app: Mapped[AppFile] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")


# The scheduler's claim order, highest priority first, then queue order (oldest batch first, longest
# expected run first within a run-all), read straight off the index: with an ascending priority column
# both databases sorted every queued run of the top priority on every claim.
Index("ix_test_runs_queue", TestRun.status, TestRun.priority_rank.desc(), TestRun.queue_order, TestRun.id)
# A queued run's position (how many of its organisation's queued runs come before it) is counted off
# this index alone; without it, every queued run's row was read: 18 ms for a queue of 10,000 on SQLite.
Index(
    "ix_test_runs_org_queue",
    TestRun.organization_id,
    TestRun.status,
    TestRun.priority_rank.desc(),
    TestRun.queue_order,
    TestRun.id,
)
# A batch's runs (its counts and verdict, group cancellation).
Index("ix_test_runs_batch", TestRun.batch_id, TestRun.status)


class Agent(TimestampMixin, Base):
    """A device agent: a process that serves devices and executes runs, authenticated by its own token."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_prefix: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The agent `qualgent serve` runs in-process; its token is replaced at every start.
    embedded: Mapped[bool] = mapped_column(default=False)
    # The organisation whose runs it claims; NULL: a shared agent (the embedded one, or created with
    # --shared by the operator) that serves every organisation.
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Device(TimestampMixin, Base):
    """A device an agent registered: online while its agent polls, busy while it runs a test."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("agent_id", "config_id"),
        Index("ix_devices_spec", "name", "platform", "os_version"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    # Its agent's organisation (NULL: a shared agent's device, for every organisation's runs); a copy,
    # so that counting the devices a run may use needs no join.
    organization_id: Mapped[str | None] = mapped_column(String(40))
    config_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(String(20))
    os_version: Mapped[str] = mapped_column(String(40))
    device_type: Mapped[str] = mapped_column(String(20), default="phone")
    driver: Mapped[str] = mapped_column(String(40), default="simulator")
    online: Mapped[bool] = mapped_column(default=True)
    current_run_id: Mapped[str | None] = mapped_column(String(40))
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Tags the agent declares for the device (its devices file's `tags`, and `pool: x` as `pool:x`);
    # selectors match on them. Migration 0010 gave existing rows []; no server default stays (see
    # TestCase.tags).
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)


class DeviceTarget(TimestampMixin, Base):
    """What runs may run on: one named device, or a platform or selector matched when a device claims a
    run (devices/selectors.py). One row per distinct spec, shared by every run (of any organisation)
    that asks the same; never changed once written."""

    __tablename__ = "device_targets"

    # "tgt_" + a hash of the canonical spec: every process names the same ask alike.
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))  # android | ios
    spec: Mapped[str] = mapped_column(Text)  # canonical JSON (TargetSpec.canonical)
    # For late-bound targets: what a queued run shows as its device, and the selector as asked (JSON,
    # the run's `device_selector`). NULL for a target of one named device.
    label: Mapped[str | None] = mapped_column(String(300))
    selector: Mapped[str | None] = mapped_column(Text)


class DeviceMatch(Base):
    """A registered device fits a target. Written when a target is first used (against every device)
    and when a device registers (against every target), so a claim compares run targets with its free
    devices' targets instead of evaluating selectors."""

    __tablename__ = "device_matches"
    __table_args__ = (Index("ix_device_matches_target", "target_id", "device_id"),)

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    target_id: Mapped[str] = mapped_column(ForeignKey("device_targets.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RunAttempt(Base):
    """One attempt at a run: which agent and device took it, and how it ended."""

    __tablename__ = "run_attempts"

    run_id: Mapped[str] = mapped_column(ForeignKey("test_runs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str | None] = mapped_column(String(40))
    device_id: Mapped[str | None] = mapped_column(String(40))
    device_name: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # passed | failed | cancelled | lost (lease expired) | timeout; NULL while running
    outcome: Mapped[str | None] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)
    # A failed attempt's failure (test | timeout | infrastructure) and failing step: a run tried again
    # after a test failure keeps each attempt's, while the run itself shows its last.
    failure_kind: Mapped[str | None] = mapped_column(String(20))
    failure_step: Mapped[int | None] = mapped_column(Integer)


class RunStep(Base):
    """A step's result within one attempt, with its log lines and screenshot."""

    __tablename__ = "run_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("test_runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(String(1200))
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    logs: Mapped[list[str]] = mapped_column(JSON, default=list)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    screenshot_key: Mapped[str | None] = mapped_column(String(600))
    # The enclosing step's index (a runFlow, a repeat iteration, a retry attempt, a hook group); NULL at
    # the top level. Steps stay one list in execution order; these two give its nesting.
    parent: Mapped[int | None] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# The retention purge finds the steps that still have a screenshot off this index, not by reading every step.
Index(
    "ix_run_steps_screenshots",
    RunStep.run_id,
    sqlite_where=RunStep.screenshot_key.is_not(None),
    postgresql_where=RunStep.screenshot_key.is_not(None),
)


class RunArtifact(Base):
    """A file an attempt produced besides screenshots: a screen recording or the device's log.

    Stored under ``{org}/artifacts/{run}/{attempt}-{name}``; an upload of the same name replaces it.
    """

    __tablename__ = "run_artifacts"
    __table_args__ = (CheckConstraint("kind IN ('video', 'log')", name="kind"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("test_runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # video | log
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(600))
    # The step that produced it (a flow's stopRecording); NULL for the run's own video and log.
    step_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Batch(TimestampMixin, Base):
    """The runs one run or run-all request queued: their counts, wall time and gate verdict. A batch of
    a `group` (a branch, a pull request) may cancel the group's earlier batches when it is made."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_group", "organization_id", "group_key", "id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(10))  # run | run-all
    group_key: Mapped[str | None] = mapped_column(String(200))
    # The later batch of the group that cancelled this one's unfinished runs (cancel_previous).
    superseded_by: Mapped[str | None] = mapped_column(String(40))


# ------------------------------------------------------------------ issue 6: the dashboard's sign-in


class WebSession(TimestampMixin, Base):
    """A person signed in to the dashboard. The cookie carries a signed random token; only its hash is
    stored, so signing out (or expiry) ends the session on the server, not only in the browser."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Every form of the session carries this token; a POST without it is refused.
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# ------------------------------------------------------------------- issue 5: the CI/CD client


class IdempotencyKey(Base):
    """The first answer to a POST (run, run-all, upload) sent with an ``Idempotency-Key`` header, kept
    24 hours so a retried request gets it back instead of queueing (or storing) again."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    # The primary key (organization, key) is the unique constraint that serialises concurrent repeats.
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of method, path and the body's hash: the same key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # NULL only inside the first request's transaction (never committed so).
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


# ------------------------------------------------------------------ issue 4: app storage and resumable uploads


class Blob(TimestampMixin, Base):
    """Stored content, once per organisation and SHA-256; ``ref_count`` counts the app records using it.

    A blob whose count drops to zero is deleted, with its object, by the purge (apps/purge.py).
    """

    __tablename__ = "blobs"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(600))
    size: Mapped[int] = mapped_column(BigInteger)
    ref_count: Mapped[int] = mapped_column(Integer, default=1)


class ResumableUpload(TimestampMixin, Base):
    """A tus upload: its declared length, the bytes received so far, and the app it became."""

    __tablename__ = "resumable_uploads"
    __table_args__ = (Index("ix_resumable_uploads_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    filename: Mapped[str] = mapped_column(String(255))
    app_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    os: Mapped[str | None] = mapped_column(String(10))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when the last byte arrived and the app was created.
    app_id: Mapped[str | None] = mapped_column(ForeignKey("app_files.id", ondelete="SET NULL"))


# ------------------------------------------------------------------------- organisation secrets


class Secret(TimestampMixin, Base):
    """A named value an organisation's runs receive (e.g. a test account's password), encrypted at rest:
    ``ciphertext`` is AES-256-GCM (secrets/crypto.py), bound to the organisation and the name."""

    __tablename__ = "secrets"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


# ------------------------------------------------------------------------ issue 15: webhooks and Slack


class WebhookEndpoint(TimestampMixin, Base):
    """Where an organisation's run events are pushed: a URL signed for (Standard Webhooks) or a Slack
    incoming webhook. ``secret_ciphertext`` is the signing secret, sealed like organisation secrets
    (secrets/crypto.py) since it must be read back to sign; for Slack the URL is the secret and is
    sealed in it too."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="webhook")  # webhook | slack
    # For Slack, only the host and the first characters of the path (the rest is the secret).
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[str] = mapped_column(String(200))  # space-separated event types
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(default=True)
    # Why the server disabled it (a day of failed deliveries); NULL when a person did, or when enabled.
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The first failed delivery since the last one that succeeded.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookEvent(Base):
    """The outbox: a run's change, written in the transaction that made it (runs/transitions.py) when its
    organisation has an enabled endpoint. The delivery worker turns each into deliveries, then deletes it."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(30))
    run_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(TimestampMixin, Base):
    """One message to one endpoint, and its delivery log: ``pending`` until an attempt succeeds
    (``delivered``) or attempts stop (``failed``). ``id`` is the message's ``webhook-id``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # batch.finished once per endpoint and batch, however many of its runs' ends saw it finished.
        UniqueConstraint("endpoint_id", "dedupe_key"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(30))
    subject_id: Mapped[str | None] = mapped_column(String(40))  # the run or batch
    dedupe_key: Mapped[str | None] = mapped_column(String(80))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Failed attempts are retried until then (a day after the event, or after a redelivery).
    retry_until: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    response_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class RunEvent(Base):
    """A run's change of status, for the live event stream (GET /v1/jobs/events). Written by database
    triggers on ``test_runs`` (migration 0014) in the transaction that made the change, whatever made it,
    so nothing can change a run without its event. ``id`` only grows (SQLite: AUTOINCREMENT, never
    reused after the purge) and is the stream's event ID, which a client resumes from."""

    __tablename__ = "run_events"
    __table_args__ = (
        Index("ix_run_events_organization_id_id", "organization_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(40))
    batch_id: Mapped[str | None] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(20))  # run.queued | run.started | run.finished
    status: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer)
    failure_kind: Mapped[str | None] = mapped_column(String(20))
    # The run's updated_at as the change set it (the purge deletes by it).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
