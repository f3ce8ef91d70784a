-- apalis.jobs is a queue: every job is inserted, updated two or three times and finished within
-- seconds. The fetch walks its partial "pending" index from the front, through the entries of
-- jobs already taken until VACUUM removes them; the default autovacuum (20% of the table) lets
-- that grow with the backlog. Vacuum it early and without throttling.
ALTER TABLE apalis.jobs SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
