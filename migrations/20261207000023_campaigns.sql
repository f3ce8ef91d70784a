-- SPEC §15 campaigns: steps with weighted variants, sent to a segment's recipients through the
-- §11 batch path (each started step is one batch: `batch_progress` says when its last message
-- is final, and `batch.finished` tells the webhooks).
CREATE TABLE campaigns (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL,
    segment_id    uuid        REFERENCES segments (id) ON DELETE SET NULL,
    -- the segment as it was when the campaign was made (a later edit or delete moves nothing)
    source        text        NOT NULL CHECK (source IN ('vehicles', 'manual', 'both')),
    filters       jsonb       NOT NULL,
    reminder_type boolean     NOT NULL DEFAULT false,
    status        text        NOT NULL DEFAULT 'draft'
                  CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'finished', 'cancelled')),
    start_at      timestamptz,
    -- the messages' deadline: this long after their step started (NULL: none)
    expires_after interval,
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE INDEX campaigns_active ON campaigns (status) WHERE status IN ('scheduled', 'running');

CREATE TABLE campaign_steps (
    campaign_id uuid        NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    step        integer     NOT NULL CHECK (step >= 0),
    -- [{template_key, weight} | {holdout: true, weight}]
    variants    jsonb       NOT NULL,
    delay_days  integer     NOT NULL DEFAULT 0 CHECK (delay_days >= 0),
    only_if     text        CHECK (only_if IN ('not_read', 'no_reply', 'no_visit', 'not_delivered')),
    status      text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'cancelled')),
    -- when it may start (the first: the campaign's start; a later one: set when the previous
    -- step's last message became final, plus delay_days)
    due_at      timestamptz,
    batch_id    uuid,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (campaign_id, step)
);

-- A step's recipients as they were when it started, each with its variant.
CREATE TABLE campaign_recipients (
    campaign_id uuid    NOT NULL,
    step        integer NOT NULL,
    phone       text    NOT NULL,
    variant     integer NOT NULL,
    holdout     boolean NOT NULL DEFAULT false,
    message_id  uuid,
    customer_id uuid,
    vehicle_id  uuid,
    manual_id   uuid,
    PRIMARY KEY (campaign_id, step, phone),
    FOREIGN KEY (campaign_id, step) REFERENCES campaign_steps (campaign_id, step) ON DELETE CASCADE
);

ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('adhoc', 'maintenance', 'manual', 'system', 'admin', 'campaign'));
ALTER TABLE messages
    ADD COLUMN campaign_id      uuid,
    ADD COLUMN campaign_step    integer,
    ADD COLUMN campaign_variant integer;
CREATE INDEX messages_campaign ON messages (campaign_id) WHERE campaign_id IS NOT NULL;
