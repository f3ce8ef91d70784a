-- SPEC §13, first part: inbound messages (StarSender's device webhook now, the Cloud API's later),
-- the opt-out and opt-in keywords, and the reply that confirms an opt-out (README "Inbound
-- messages and opt-out keywords"). The `inbound` module owns these tables.

-- Every inbound HTTP request as it was received: the exact bytes, whatever their shape, so that
-- nothing a gateway sent is lost to a parser (unknown fields included). Gateway-neutral: the
-- processing job (`inbound::job`) dispatches on `gateway`.
CREATE TABLE inbound_payloads (
    id           uuid        PRIMARY KEY,
    gateway      text        NOT NULL CHECK (gateway IN ('starsender', 'cloud_api')),
    received_at  timestamptz NOT NULL DEFAULT now(),
    content_type text,
    body         bytea       NOT NULL,
    -- the job that processes it (queue `inbound`)
    job_id       text        NOT NULL,
    -- set once it was processed (in the transaction that applied it); `result` says what
    -- processing concluded (`ok`, `duplicate`, `malformed: …`; `failed: …` with no
    -- `processed_at` when processing gave up)
    processed_at timestamptz,
    result       text
);

-- One message a customer sent us.
CREATE TABLE inbound_messages (
    id          uuid        PRIMARY KEY,
    gateway     text        NOT NULL CHECK (gateway IN ('starsender', 'cloud_api')),
    -- the gateway's message id (the Cloud API's `wamid`); StarSender gives none
    external_id text,
    -- normalized like a recipient (`62…`)
    from_phone  text        NOT NULL,
    text        text,
    -- the gateway's timestamp, when it gave one
    sent_at     timestamptz,
    received_at timestamptz NOT NULL,
    payload_id  uuid        NOT NULL REFERENCES inbound_payloads (id),
    -- the keyword the text matched
    keyword     text        CHECK (keyword IN ('optout', 'optin')),
    -- a gateway that sends a message twice (the Cloud API retries for days) stores it once
    UNIQUE (gateway, external_id)
);
CREATE INDEX inbound_messages_from ON inbound_messages (from_phone, id DESC);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);

-- When each number last wrote to us (the Cloud API's 24-hour customer-service window; segments'
-- `has_inbound_since`). Only ever moved forward.
CREATE TABLE whatsapp_contacts (
    phone           text        PRIMARY KEY,
    last_inbound_at timestamptz NOT NULL
);

-- Who put a number on the opt-out list: an operator or application through the API, or the
-- customer with a keyword. A keyword opt-in lifts only a keyword's opt-out.
ALTER TABLE suppressions
    ADD COLUMN source text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'inbound'));

-- Kind `system`: messages the service sends on its own account (the opt-out confirmation).
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('adhoc', 'maintenance', 'manual', 'system'));
