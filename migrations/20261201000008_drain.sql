-- Every send updates its job twice (fetched, then settled), and neither update can be HOT (both
-- change `status` and `lock_by`), so every index of apalis.jobs gets two new entries per send.
-- apalis' own index on `lock_by` duplicates `jobs_held_by` (the same column, for the jobs that
-- are held: the only ones anything looks up by worker) and is dropped.
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
