-- Manual WhatsApp customers (SPEC §7, seed MANUAL_WHATSAPP_DOCUMENTATION.md): records outside the
-- customer table, reminded through the same queue.
CREATE TABLE manual_whatsapp (
    id                  uuid PRIMARY KEY,
    customer_name       text        NOT NULL,
    nopol               text        NOT NULL,
    -- normalized (SPEC §4 rules)
    no_hp               text        NOT NULL,
    last_service        date,
    next_service        date,
    is_active           integer     NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    reminder_sent_count integer     NOT NULL DEFAULT 0,
    last_reminder_sent  timestamptz,
    notes               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- `B 1234 XYZ` and `b 1234 xyz` are the same plate.
CREATE UNIQUE INDEX manual_whatsapp_nopol ON manual_whatsapp (upper(nopol));
CREATE INDEX manual_whatsapp_next_service ON manual_whatsapp (next_service, id);

-- One reminder per record and business date (unless forced: `{id}/send-reminder?force=true`).
CREATE TABLE manual_reminders (
    id            uuid PRIMARY KEY,
    manual_id     uuid        NOT NULL REFERENCES manual_whatsapp (id) ON DELETE CASCADE,
    reminder_date date        NOT NULL,
    forced        boolean     NOT NULL DEFAULT false,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    message_id    uuid        NOT NULL REFERENCES messages (id) DEFERRABLE INITIALLY DEFERRED,
    reason        text,
    sent_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX manual_reminders_once_a_day ON manual_reminders (manual_id, reminder_date)
    WHERE NOT forced;
CREATE INDEX manual_reminders_message ON manual_reminders (message_id);
