-- Bulk sending (SPEC §11) remembers where a message came from: every message stored by one
-- `POST /whatsapp/send-batch` call carries that call's id (`batch_id`, the id its
-- `send_batches` row has when it was sent with an `Idempotency-Key`) and its item's
-- `client_ref`. Both stay NULL for every other message. Neither changes once stored.
ALTER TABLE messages
    ADD COLUMN batch_id   uuid,
    ADD COLUMN client_ref text;

-- Batches sent with an `Idempotency-Key` before this migration: their answer (kept for the
-- replay) names each item's message and client_ref, so those messages get them now. Batches sent
-- without a key left nothing to go by; their messages stay NULL.
UPDATE messages m
SET batch_id = b.batch_id, client_ref = b.client_ref
FROM (
    SELECT s.id AS batch_id, (item ->> 'id')::uuid AS message_id, item ->> 'client_ref' AS client_ref
    FROM send_batches s
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.result -> 'items') = 'array' THEN s.result -> 'items' ELSE '[]'::jsonb END
    ) AS item
    WHERE item ->> 'id' IS NOT NULL
) b
WHERE m.id = b.message_id;

-- A batch's messages, newest first: `GET /whatsapp/messages?batch=…` orders and pages by id
-- (UUIDv7) like the rest of the list. Only messages of a batch are indexed. `batch_id` is never
-- updated, so a send's two status updates stay HOT (see 20261125000003_messages_hot_updates.sql);
-- `client_ref` is not indexed.
CREATE INDEX messages_batch_newest ON messages (batch_id, id DESC) WHERE batch_id IS NOT NULL;
