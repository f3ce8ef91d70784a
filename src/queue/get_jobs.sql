-- apalis' fetch, with the same signature and semantics, planned so that it never reads the whole
-- table. apalis 1.0 writes `UPDATE … FROM (SELECT … LIMIT $n FOR UPDATE SKIP LOCKED)`; inside a
-- SQL function the LIMIT is a parameter, the planner guesses 10% of the table and hashes all of
-- `apalis.jobs` on every fetch (100 ms at 50,000 rows, growing with every finished job kept).
-- `id = ANY(ARRAY(…))` keeps it to index lookups of the rows actually claimed.
-- PL/pgSQL, not SQL: a SQL function's body is parsed and planned again on every call (a sixth of
-- the database's CPU in the drain benchmark); PL/pgSQL keeps the plan for the session.
CREATE OR REPLACE FUNCTION apalis.get_jobs(
    worker_id TEXT,
    v_job_type TEXT,
    v_job_count INTEGER DEFAULT 5
)
RETURNS SETOF apalis.jobs
LANGUAGE plpgsql
VOLATILE
AS $$
BEGIN
    RETURN QUERY
    WITH fetched AS (
    UPDATE apalis.jobs j
    SET
        status = 'Queued',
        lock_by = worker_id,
        lock_at = now()
    WHERE j.id = ANY (ARRAY(
        SELECT id
        FROM apalis.jobs
        WHERE
            (
                status = 'Pending'
                OR (
                    status = 'Failed'
                    AND attempts < max_attempts
                )
            )
            AND run_at < now()
            AND job_type = v_job_type
            -- a paused queue gives nothing (README "Operations": pause/resume)
            AND NOT EXISTS (SELECT 1 FROM public.queue_pauses p WHERE p.queue = v_job_type)
            -- nor one on hold (README "Delivery policy": Retry-After, open circuit)
            AND NOT EXISTS (SELECT 1 FROM public.queue_holds h
                            WHERE h.queue = v_job_type AND h.until > now())
        ORDER BY priority DESC, run_at ASC
        LIMIT v_job_count
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING j.*
    )
    SELECT * FROM fetched;
END
$$;
