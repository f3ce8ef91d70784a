-- A job whose message passed its deadline unsent (README "Delivery policy": deadlines) was
-- withdrawn, not failed: the ops API shows it as `cancelled` (`last_result` {"Err": "expired"},
-- written by the expiry sweep or by the claim). Otherwise the view of
-- 20261125000002_job_states.sql.
CREATE OR REPLACE VIEW job_states AS
SELECT
    j.id,
    j.job_type AS queue,
    CASE
        WHEN j.status = 'Pending' THEN 'pending'
        WHEN j.status = 'Failed' AND j.attempts < j.max_attempts THEN 'pending'
        WHEN j.status IN ('Queued', 'Running') THEN 'running'
        WHEN j.status = 'Done' THEN 'done'
        WHEN j.status = 'Killed'
             AND j.last_result IN ('{"Err": "cancelled"}'::jsonb, '{"Err": "expired"}'::jsonb)
            THEN 'cancelled'
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
