-- Bulk sending (SPEC §11): a batch sent with an `Idempotency-Key` is remembered with its answer, so
-- that a retried batch returns what the first one did (and a different batch under the same key
-- is refused). Messages of a batch are ordinary messages.
CREATE TABLE send_batches (
    id                  uuid        PRIMARY KEY,
    idempotency_scope   text        NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    result              jsonb       NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (idempotency_scope, idempotency_key)
);
