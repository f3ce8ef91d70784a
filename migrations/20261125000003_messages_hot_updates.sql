-- A send updates its message twice (`sending`, then the outcome). With no index on the columns
-- those updates touch, and room on the page, PostgreSQL makes them HOT updates: no index entry
-- is written at all. The status index was the one that prevented it; listing by status walks
-- the primary key (newest first) instead.
DROP INDEX IF EXISTS messages_status_newest;
ALTER TABLE messages SET (fillfactor = 80);
