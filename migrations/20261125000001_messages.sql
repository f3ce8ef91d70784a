-- Every WhatsApp message the service has accepted. The apalis job that sends it carries only `id`.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('adhoc', 'maintenance', 'manual')),
    to_phone         text        NOT NULL,
    body             text        NOT NULL,
    file_url         text,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'cancelled')),
    run_at           timestamptz NOT NULL,
    job_id           text,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    next_attempt_at  timestamptz,
    last_error       text,
    gateway_response jsonb,
    sent_at          timestamptz,
    failed_at        timestamptz,
    cancelled_at     timestamptz,
    created_by       text,
    -- Idempotency-Key support: the key is scoped to the caller (`sub`), the hash is of the request.
    idempotency_scope text,
    idempotency_key   text,
    request_fingerprint text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Ids are UUIDv7 (time-ordered): "newest first" is `ORDER BY id DESC` and the cursor is an id.
CREATE INDEX messages_status_newest ON messages (status, id DESC);
CREATE INDEX messages_kind_newest ON messages (kind, id DESC);
CREATE INDEX messages_to_newest ON messages (to_phone, id DESC);
CREATE INDEX messages_job_id ON messages (job_id);

-- One row per gateway call: the status history of a message.
CREATE TABLE message_attempts (
    message_id   uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text        NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed', 'ambiguous')),
    class        text        NOT NULL,
    error        text,
    PRIMARY KEY (message_id, attempt, started_at)
);

-- What the built-in sandbox gateway received (SPEC §1), shared by every process on the database.
CREATE TABLE sandbox_messages (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    message_type text        NOT NULL,
    to_phone     text        NOT NULL,
    body         text        NOT NULL,
    file_url     text
);
