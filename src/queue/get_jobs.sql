-- apalis' fetch, with the same signature and semantics, planned so that it never reads the whole
-- table. apalis 1.0 writes `UPDATE … FROM (SELECT … LIMIT $n FOR UPDATE SKIP LOCKED)`; inside a
-- SQL function the LIMIT is a parameter, the planner guesses 10% of the table and hashes all of
-- `apalis.jobs` on every fetch (100 ms at 50,000 rows, growing with every finished job kept).
-- `id = ANY(…)` keeps it to index lookups of the rows actually claimed.
-- PL/pgSQL, not SQL: a SQL function's body is parsed and planned again on every call (a sixth of
-- the database's CPU in the drain benchmark); PL/pgSQL keeps the plan for the session.
--
-- Priority classes (README "Delivery policy": campaigns yield; `queue::Class`): jobs of
-- priority >= 0 (single sends, and every job of the other queues) are claimed first; bulk jobs
-- (priority < 0, campaign messages) only for what is left of the batch, and only while this
-- worker holds fewer than half its batch (= its slots) of them, at least one — the other half
-- stays free for a single job that comes due. A bulk job left behind stays `Pending` as it was:
-- no attempt spent, nothing to give back.
CREATE OR REPLACE FUNCTION apalis.get_jobs(
    worker_id TEXT,
    v_job_type TEXT,
    v_job_count INTEGER DEFAULT 5
)
RETURNS SETOF apalis.jobs
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    single_ids TEXT[];
    bulk_ids TEXT[] := '{}';
    bulk_room INTEGER;
BEGIN
    -- a paused queue gives nothing (README "Operations": pause/resume), nor one on hold
    -- (README "Delivery policy": Retry-After, open circuit)
    IF EXISTS (SELECT 1 FROM public.queue_pauses p WHERE p.queue = v_job_type)
       OR EXISTS (SELECT 1 FROM public.queue_holds h
                  WHERE h.queue = v_job_type AND h.until > now()) THEN
        RETURN;
    END IF;
    single_ids := ARRAY(
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
            AND priority >= 0
        ORDER BY priority DESC, run_at ASC
        LIMIT v_job_count
        FOR UPDATE SKIP LOCKED
    );
    IF cardinality(single_ids) < v_job_count THEN
        -- the bulk jobs this worker holds (fetched and not yet settled: running or buffered)
        SELECT least(v_job_count - cardinality(single_ids),
                     greatest(v_job_count / 2, 1) - count(*))
        INTO bulk_room
        FROM apalis.jobs
        WHERE lock_by = worker_id AND status IN ('Queued', 'Running') AND priority < 0;
        IF bulk_room > 0 THEN
            bulk_ids := ARRAY(
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
                    AND priority < 0
                ORDER BY priority DESC, run_at ASC
                LIMIT bulk_room
                FOR UPDATE SKIP LOCKED
            );
        END IF;
    END IF;
    RETURN QUERY
    WITH fetched AS (
    UPDATE apalis.jobs j
    SET
        status = 'Queued',
        lock_by = worker_id,
        lock_at = now()
    WHERE j.id = ANY (single_ids || bulk_ids)
    RETURNING j.*
    )
    -- single jobs first: apalis starts them in this order
    SELECT * FROM fetched ORDER BY priority DESC, run_at ASC;
END
$$;
