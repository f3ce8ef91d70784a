-- SPEC §15: messages of kind `campaign` (one recipient's message of a campaign). They wait for the
-- send window and an opt-out of scope `all` stops them (the code: `messages::Kind`); in the send
-- queue their jobs have priority -1 (`queue::Class::Bulk`) and yield to every other kind: the
-- fetch (`queue/get_jobs.sql`) takes them after the others, from the existing partial index on
-- (job_type, priority DESC, run_at), and counts a worker's held ones through `jobs_held_by`.
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('adhoc', 'maintenance', 'manual', 'system', 'admin', 'campaign'));
