-- Process liveness for orphan rescue (src/queue/rescue.rs): one row per running process that has
-- workers, beaten every second; apalis worker names carry the process id.
CREATE TABLE queue_processes (
    id         text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Held jobs are few; the rescue and the self-release scan only them.
CREATE INDEX jobs_held_by ON apalis.jobs (lock_by) WHERE status IN ('Queued', 'Running');
