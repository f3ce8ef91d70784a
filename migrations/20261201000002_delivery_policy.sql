-- The delivery policy (README "Delivery policy"): cluster-wide, so all of it lives here.

-- Messages: a new terminal status `expired`, deadlines, the send window opt-in, and why a
-- message is held back (snoozed by the policy: no attempt spent).
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'cancelled', 'expired'));
ALTER TABLE messages
    ADD COLUMN expires_at     timestamptz,
    ADD COLUMN expired_at     timestamptz,
    ADD COLUMN respect_window boolean NOT NULL DEFAULT false,
    ADD COLUMN held_until     timestamptz,
    ADD COLUMN held_reason    text;
-- The expiry sweep walks the deadlines of its recent past. No index here may mention `status`
-- (not even in a predicate): a send's two status updates must stay HOT (see
-- 20261125000003_messages_hot_updates.sql); `expires_at` never changes once stored. (Cancelling
-- a number's unsent messages uses `messages_to_newest`.)
CREATE INDEX messages_deadline ON messages (expires_at) WHERE expires_at IS NOT NULL;

ALTER TABLE reminders DROP CONSTRAINT reminders_status_check;
ALTER TABLE reminders ADD CONSTRAINT reminders_status_check
    CHECK (status IN ('queued', 'sent', 'failed', 'cancelled', 'expired'));
ALTER TABLE manual_reminders DROP CONSTRAINT manual_reminders_status_check;
ALTER TABLE manual_reminders ADD CONSTRAINT manual_reminders_status_check
    CHECK (status IN ('queued', 'sent', 'failed', 'cancelled', 'expired'));

-- The settings every process follows (one row; environment values seed it once, then the
-- API changes it).
CREATE TABLE delivery_policy (
    id                          boolean PRIMARY KEY DEFAULT true CHECK (id),
    send_window                 text             NOT NULL,
    recipient_min_interval_secs integer          NOT NULL CHECK (recipient_min_interval_secs >= 0),
    rate_per_second             double precision NOT NULL CHECK (rate_per_second >= 0),
    burst                       integer          NOT NULL CHECK (burst >= 1),
    circuit_failure_threshold   integer          NOT NULL CHECK (circuit_failure_threshold >= 1),
    updated_at                  timestamptz      NOT NULL DEFAULT now(),
    updated_by                  text
);

-- The sender's shared state: the cluster-wide token bucket (tokens may go below zero: slots
-- reserved ahead), the adaptive slow-down after a 429, and the circuit breaker.
CREATE TABLE sender_state (
    sender               text PRIMARY KEY,
    tokens               double precision NOT NULL,
    refilled_at          timestamptz      NOT NULL DEFAULT now(),
    -- the effective rate right after the last 429 (NULL: not slowed down)
    slowed_rate          double precision,
    rate_limited_at      timestamptz,
    retry_after_until    timestamptz,
    circuit              text             NOT NULL DEFAULT 'closed'
                         CHECK (circuit IN ('closed', 'open', 'half_open')),
    consecutive_failures integer          NOT NULL DEFAULT 0,
    opened_at            timestamptz,
    cooldown_secs        integer          NOT NULL DEFAULT 30,
    reopen_at            timestamptz,
    probe_by             text,
    probe_until          timestamptz,
    last_error           text,
    last_error_at        timestamptz
);

-- When each number was last called (per-recipient spacing).
CREATE TABLE recipient_sends (
    phone        text PRIMARY KEY,
    last_sent_at timestamptz NOT NULL
);

-- Numbers that asked not to be messaged.
CREATE TABLE suppressions (
    phone      text PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('reminders', 'all')),
    reason     text,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Why a queue is paused (an operator's pause, or the circuit breaker's).
ALTER TABLE queue_pauses ADD COLUMN reason text;

-- Holds that end by themselves (a gateway's Retry-After, an open circuit's cool-down): no job of
-- the queue is fetched before `until` (src/queue/get_jobs.sql).
CREATE TABLE queue_holds (
    queue  text        NOT NULL,
    reason text        NOT NULL,
    until  timestamptz NOT NULL,
    PRIMARY KEY (queue, reason)
);
