-- Who changed an opt-out last, and every change with who made it and when: a client may add or
-- widen an opt-out, only an operator may narrow (all → reminders) or remove one, and a removed
-- entry leaves its trace here.
ALTER TABLE suppressions ADD COLUMN updated_by text;
UPDATE suppressions SET updated_by = created_by;

CREATE TABLE suppression_changes (
    id         bigserial   PRIMARY KEY,
    phone      text        NOT NULL,
    -- `added`, `changed` (scope or reason replaced) or `removed`
    action     text        NOT NULL CHECK (action IN ('added', 'changed', 'removed')),
    -- the entry after the change (before it, for `removed`)
    scope      text        NOT NULL,
    reason     text,
    changed_by text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suppression_changes_phone ON suppression_changes (phone, changed_at);
