-- apalis announces each due job it inserts with its own NOTIFY, from a row trigger: a
-- 1,000-message batch ran the trigger function 1,000 times and queued 1,000 notifications (each
-- with its own payload, so PostgreSQL cannot fold them), which every listener then read. Workers
-- only need to know that a queue has due work (src/queue/wakeup.rs reads `job_type` and nothing
-- else), so one statement-level trigger sends one notification per queue per INSERT statement:
-- one per grouped enqueue, per batch, per fan-out page.
CREATE OR REPLACE FUNCTION apalis.notify_new_jobs_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('apalis::job::insert', json_build_object('job_type', due.job_type)::text)
    FROM (SELECT DISTINCT job_type FROM inserted WHERE run_at <= now()) due;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
CREATE TRIGGER notify_workers_once
    AFTER INSERT ON apalis.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION apalis.notify_new_jobs_once();
