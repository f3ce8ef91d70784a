-- SPEC §14: the daily summary to ADMIN_PHONES. A run keeps its skips by reason (each pass's);
-- one row per business date records that its summary was sent: the primary key makes it once a
-- day however many processes decide at the same moment.
ALTER TABLE fanout_runs
    ADD COLUMN skipped_reasons        jsonb,
    ADD COLUMN manual_skipped_reasons jsonb;

-- The day's manual reminders are read by date (the console, the summary's "nothing unsent").
CREATE INDEX manual_reminders_date ON manual_reminders (reminder_date);

CREATE TABLE admin_daily_summaries (
    business_date date        PRIMARY KEY,
    -- what made it go: the run had nothing left unsent, or the send window closed
    trigger       text        NOT NULL CHECK (trigger IN ('drained', 'window_close')),
    run_id        uuid        REFERENCES fanout_runs (id) ON DELETE SET NULL,
    counts        jsonb       NOT NULL,
    message_ids   uuid[]      NOT NULL DEFAULT '{}',
    sent_at       timestamptz NOT NULL DEFAULT now()
);

INSERT INTO templates (key, builtin) VALUES ('admin_daily_summary', true);
INSERT INTO template_versions (key, version, bodies, created_by) VALUES
('admin_daily_summary', 1, jsonb_build_object(
    'id', $t$📊 Ringkasan pengingat {date} · {workshop_name}
Memenuhi syarat: {eligible}
Terkirim: {sent} · gagal: {failed} · belum terkirim: {queued}
Dilewati: {skipped} ({skipped_reasons})
Kedaluwarsa: {expired} · berhenti langganan: {opted_out}
Diterima: {delivered} · dibaca: {read} · tidak sampai: {undelivered}$t$,
    'en', $t$📊 Reminder summary {date} · {workshop_name}
Eligible: {eligible}
Sent: {sent} · failed: {failed} · not sent yet: {queued}
Skipped: {skipped} ({skipped_reasons})
Expired: {expired} · opted out: {opted_out}
Delivered: {delivered} · read: {read} · undelivered: {undelivered}$t$
), 'built-in');
