-- fedgate job queue, version 2: federated analyses (issue 17) and the research lane.
-- Portable SQL for SQLite and PostgreSQL: {id} and {real} are filled in per dialect.

-- 'clinical' (studies from the PACS, always first) or 'research' (a federated analysis's
-- backfill, throttled, paused and cancelled with its analysis).
ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'clinical';
ALTER TABLE jobs ADD COLUMN analysis_id TEXT;
CREATE INDEX jobs_by_analysis ON jobs (analysis_id, state);
CREATE INDEX jobs_by_lane ON jobs (lane, state);

-- What the site keeps about each analysis a hub sent (gateway.analysis.records.Analysis).
CREATE TABLE analyses (
    analysis_id TEXT PRIMARY KEY,
    hub TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    cohort TEXT NOT NULL,
    validated INTEGER NOT NULL,
    state TEXT NOT NULL,
    received_at {real} NOT NULL,
    installed_model TEXT,
    state_changed_at {real} NOT NULL,
    state_changed_by TEXT NOT NULL
);

-- Every change of an analysis's state: who and when (approval, pause, cancel, done).
CREATE TABLE analysis_transitions (
    analysis_id TEXT NOT NULL REFERENCES analyses (analysis_id) ON DELETE CASCADE,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at {real} NOT NULL
);
CREATE INDEX analysis_transitions_by_analysis ON analysis_transitions (analysis_id);

-- Installed models the site marked validated: their results go to the clinical destination.
CREATE TABLE validated_models (
    model_name TEXT PRIMARY KEY,
    validated INTEGER NOT NULL,
    changed_at {real} NOT NULL
);
