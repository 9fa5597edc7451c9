-- fedgate job queue and study-stability tracker, version 1.
-- Portable SQL for SQLite and PostgreSQL: {id} and {real} are filled in per dialect.

CREATE TABLE jobs (
    id {id},
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    model TEXT NOT NULL,
    rule TEXT NOT NULL,
    inference_url TEXT NOT NULL,
    source_url TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    rerun_requested INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at {real},
    next_attempt_at {real} NOT NULL,
    created_at {real} NOT NULL,
    enqueued_at {real} NOT NULL,
    started_at {real},
    finished_at {real},
    last_error TEXT,
    error_kind TEXT,
    sr_sop_instance_uid TEXT,
    seg_sop_instance_uid TEXT,
    findings_count INTEGER,
    result TEXT,
    UNIQUE (study_instance_uid, series_instance_uid, model)
);
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_by_study ON jobs (study_instance_uid);

CREATE TABLE job_attempts (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at {real} NOT NULL,
    finished_at {real},
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- When each series last received an instance, and when it was last routed; owned by the
-- gateway that received it (its embedded store holds the instances).
CREATE TABLE series_activity (
    series_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    last_instance_at {real} NOT NULL,
    evaluated_at {real}
);
CREATE INDEX series_activity_by_study ON series_activity (study_instance_uid);

-- Studies that became stable with no routable series, and why.
CREATE TABLE routing_decisions (
    study_instance_uid TEXT PRIMARY KEY,
    decided_at {real} NOT NULL,
    jobs_created INTEGER NOT NULL,
    reason TEXT NOT NULL
);
