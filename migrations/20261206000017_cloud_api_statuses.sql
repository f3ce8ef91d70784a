-- Cloud API status webhooks (SPEC §13): each (wamid, status) once, whatever Meta repeats.
-- A status names its message by `biz_opaque_callback_data` (our message id) or by its wamid
-- (`messages.gateway_message_id`); one whose message is not known yet (it can arrive before our
-- outcome commits) stays unapplied and is tried again for 10 minutes, then dropped.
CREATE TABLE cloud_api_statuses (
    wamid       text        NOT NULL,
    status      text        NOT NULL,
    callback    text,
    recipient   text,
    -- when WhatsApp says it happened
    at          timestamptz NOT NULL,
    errors      jsonb,
    payload_id  uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    message_id  uuid,
    applied_at  timestamptz,
    dropped_at  timestamptz,
    PRIMARY KEY (wamid, status)
);
-- A send cut off mid-call looks for a status of its message before it calls again.
CREATE INDEX cloud_api_statuses_message ON cloud_api_statuses (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX cloud_api_statuses_callback ON cloud_api_statuses (callback) WHERE callback IS NOT NULL;
CREATE INDEX cloud_api_statuses_received ON cloud_api_statuses (received_at);

-- When the message's attempt that may have reached the gateway began (a timeout after the
-- request went out, or a process killed mid-call); cleared when the message is sent or failed.
ALTER TABLE messages ADD COLUMN ambiguous_since timestamptz;
