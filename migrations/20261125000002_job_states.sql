-- The job statuses of the ops API and the metrics (SPEC §8), defined once over apalis' columns:
--   pending   waiting: due, scheduled, or waiting for a retry (apalis `Failed` with attempts left)
--   running   held by a worker (apalis `Queued` = fetched, `Running` = started)
--   done      finished
--   failed    no more attempts: exhausted, permanent (apalis `Killed`) or aborted
--   cancelled apalis `Killed` by a cancel (last_result says so)
CREATE VIEW job_states AS
SELECT
    j.id,
    j.job_type AS queue,
    CASE
        WHEN j.status = 'Pending' THEN 'pending'
        WHEN j.status = 'Failed' AND j.attempts < j.max_attempts THEN 'pending'
        WHEN j.status IN ('Queued', 'Running') THEN 'running'
        WHEN j.status = 'Done' THEN 'done'
        WHEN j.status = 'Killed' AND j.last_result = '{"Err": "cancelled"}'::jsonb THEN 'cancelled'
        ELSE 'failed'
    END AS state,
    j.run_at,
    j.attempts,
    j.max_attempts,
    j.lock_by,
    j.lock_at,
    j.done_at,
    j.last_result
FROM apalis.jobs j;
