-- Maintenance reminders (SPEC §5, §6).

-- The fan-out walks eligible vehicles in (next_visit_date, id) order, a page at a time.
DROP INDEX vehicles_next_visit;
CREATE INDEX vehicles_next_visit ON vehicles (next_visit_date, id);

-- One reminder per vehicle and business date, ever: the unique key is what makes every fan-out
-- pass (cron, catch-up, run-now, concurrent or after a crash) idempotent.
CREATE TABLE reminders (
    id              uuid PRIMARY KEY,
    vehicle_id      uuid        NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    customer_id     uuid        NOT NULL,
    reminder_date   date        NOT NULL,
    next_visit_date date        NOT NULL,
    status          text        NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    message_id      uuid        NOT NULL REFERENCES messages (id) DEFERRABLE INITIALLY DEFERRED,
    reason          text,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (vehicle_id, reminder_date)
);
CREATE INDEX reminders_message ON reminders (message_id);
CREATE INDEX reminders_date ON reminders (reminder_date, id DESC);

-- How often each customer + vehicle was reminded (seed: WHATSAPP_REPORT_DOCUMENTATION.md).
-- Bumped in the same transaction that marks a reminder message sent.
CREATE TABLE whatsapp_report (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    id_customer       uuid        NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    id_vehicle        uuid        NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    last_message_date timestamptz NOT NULL,
    frequency         integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id_customer, id_vehicle)
);
CREATE INDEX whatsapp_report_vehicle ON whatsapp_report (id_vehicle);

-- The daily schedule, shared by every process (changes at runtime persist here).
CREATE TABLE scheduler_settings (
    job_id     text PRIMARY KEY,
    enabled    boolean     NOT NULL,
    hour       integer     NOT NULL CHECK (hour BETWEEN 0 AND 23),
    minute     integer     NOT NULL CHECK (minute BETWEEN 0 AND 59),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every fan-out pass. A scheduled tick is claimed by inserting its row: `tick_at` is unique, so
-- one tick yields one fan-out however many processes tick.
CREATE TABLE fanout_runs (
    id              uuid PRIMARY KEY,
    trigger         text        NOT NULL CHECK (trigger IN ('cron', 'catch_up', 'manual')),
    business_date   date        NOT NULL,
    tick_at         timestamptz UNIQUE,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    job_id          text,
    eligible        integer,
    reminder_queued integer,
    already_queued  integer,
    skipped         integer,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX fanout_runs_finished ON fanout_runs (finished_at DESC) WHERE status = 'done';
