-- Operations (SPEC §8).

-- Paused queues, shared by every process: apalis.get_jobs (src/queue/get_jobs.sql) takes no job
-- of a queue listed here, and a send job fetched just before the pause hands itself back.
CREATE TABLE queue_pauses (
    queue     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by text
);

-- Housekeeping that one process at a time does (retention): when it last ran.
CREATE TABLE maintenance_runs (
    task        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    last_result jsonb
);

-- The ops job list is newest first (ULID ids) and often filtered by queue.
CREATE INDEX IF NOT EXISTS jobs_type_id ON apalis.jobs (job_type, id DESC);
