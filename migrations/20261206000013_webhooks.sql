-- SPEC §12: delivery receipts on the message, and signed outbound webhooks through an outbox.

-- Receipts: what WhatsApp reported after the gateway accepted a message. Forward only
-- (`messages::receipts`); `status` stays the queue lifecycle.
ALTER TABLE messages
    ADD COLUMN delivery_status    text CHECK (delivery_status IN ('delivered', 'read', 'undelivered')),
    ADD COLUMN delivered_at       timestamptz,
    ADD COLUMN read_at            timestamptz,
    ADD COLUMN undelivered_reason text,
    ADD COLUMN undelivered_code   text,
    -- the gateway's own id of the message (Cloud API `wamid.…`); null when it gives none
    ADD COLUMN gateway_message_id text;
CREATE INDEX messages_delivery_status_newest ON messages (delivery_status, id DESC)
    WHERE delivery_status IS NOT NULL;
CREATE INDEX messages_gateway_message_id ON messages (gateway_message_id)
    WHERE gateway_message_id IS NOT NULL;

-- A job id as apalis needs it: a ULID (48 bits of milliseconds, 80 random bits, Crockford
-- base32). The outbox inserts delivery jobs in the statement that writes the event, so the id is
-- made here rather than in Rust (`queue::new_job_id` makes the same shape).
CREATE FUNCTION apalis_job_id() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    millis bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    random_bytes bytea := substring(uuid_send(gen_random_uuid()) FROM 7 FOR 10);
    bits bit varying;
    out text := '';
BEGIN
    -- 2 padding bits + 48 time bits + 80 random bits = 130 bits = 26 base32 digits
    bits := B'00' || millis::bit(48) || ('x' || encode(random_bytes, 'hex'))::bit(80);
    FOR i IN 0..25 LOOP
        out := out || substr(alphabet, substring(bits FROM i * 5 + 1 FOR 5)::integer + 1, 1);
    END LOOP;
    RETURN out;
END
$$;

-- A time-ordered UUID (version 7: 48 bits of milliseconds, then random bits) for the rows the
-- outbox inserts with every send: a random key would write each insert into a random page of the
-- primary key (and a full-page image of it after every checkpoint).
CREATE FUNCTION webhook_uuid() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    bytes bytea := uuid_send(gen_random_uuid());
    millis bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
BEGIN
    bytes := overlay(bytes PLACING substring(int8send(millis) FROM 3 FOR 6) FROM 1 FOR 6);
    -- version 7 (0111) in the high nibble of byte 6; the variant bits of v4 stay
    bytes := set_byte(bytes, 6, (get_byte(bytes, 6) & 15) | 112);
    RETURN encode(bytes, 'hex')::uuid;
END
$$;

-- Who receives events. Soft-deleted (`deleted_at`) so that its deliveries stay readable.
CREATE TABLE webhook_subscriptions (
    id                    uuid        PRIMARY KEY,
    url                   text        NOT NULL,
    events                text[]      NOT NULL,
    description           text,
    enabled               boolean     NOT NULL DEFAULT true,
    disabled_reason       text CHECK (disabled_reason IN ('gone', 'failing', 'manual')),
    -- the first failed attempt since the last success; cleared by a success or by enabling
    failing_since         timestamptz,
    last_success_at       timestamptz,
    secret                text        NOT NULL,
    -- during a rotation: the old secret, which keeps signing (a second signature) until then
    previous_secret       text,
    previous_secret_until timestamptz,
    created_by            text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE INDEX webhook_subscriptions_live ON webhook_subscriptions (id) WHERE deleted_at IS NULL;

-- One row per event that at least one subscription wanted. `id` is the `webhook-id` header.
CREATE TABLE webhook_events (
    id         text        PRIMARY KEY,
    -- the order events happened in (deliveries of one message follow it)
    seq        bigserial   NOT NULL,
    type       text        NOT NULL,
    -- the message it is about (per-message order of deliveries); null for other events
    message_id uuid,
    data       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, subscription): what is sent, its state and its job in queue `webhooks`.
CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,
    -- its event's `seq`
    seq             bigint      NOT NULL,
    -- (no foreign key: nothing deletes events yet, and every index costs each send)
    event_id        text        NOT NULL,
    -- no foreign keys here or in webhook_attempts: a subscription is never removed (deleting one
    -- hides it), and a key check on every insert locks the subscription's row (shared by every
    -- delivery to it: a multixact per insert)
    subscription_id uuid        NOT NULL,
    type            text        NOT NULL,
    message_id      uuid,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    job_id          text        NOT NULL,
    next_attempt_at timestamptz,
    -- an earlier event of its message was pending for this subscription when it was made (or it
    -- was replayed): its claim checks the order; the others need not look
    after_earlier   boolean     NOT NULL DEFAULT false,
    -- why its job is snoozed: 'order' (an earlier event of its message is pending) or
    -- 'capacity' (4 in flight); a finishing delivery wakes the next one
    waiting         text CHECK (waiting IN ('order', 'capacity')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- since when it waits to be delivered: made, or replayed (the age of the oldest pending)
    pending_since   timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- a subscription's deliveries, newest first (one per event: `seq` is unique within it)
CREATE UNIQUE INDEX webhook_deliveries_subscription_newest
    ON webhook_deliveries (subscription_id, seq DESC);
CREATE INDEX webhook_deliveries_pending_by_message
    ON webhook_deliveries (subscription_id, message_id, seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_waiting
    ON webhook_deliveries (subscription_id, waiting, seq) WHERE waiting IS NOT NULL;
CREATE INDEX webhook_deliveries_pending_age ON webhook_deliveries (pending_since) WHERE status = 'pending';

-- A time in events' data: RFC 3339, UTC, microseconds (as the API writes times).
CREATE FUNCTION webhook_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The 4 delivery slots of a subscription (at most 4 deliveries in flight to it, across every
-- process): a claim takes a free one (or one whose lease ran out: its worker died), the record
-- frees it. A few rows per subscription, updated in place (no indexed column changes).
CREATE TABLE webhook_slots (
    subscription_id uuid     NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    slot            smallint NOT NULL,
    delivery_id     uuid,
    until           timestamptz,
    PRIMARY KEY (subscription_id, slot)
);

-- One row per HTTP attempt of a delivery.
CREATE TABLE webhook_attempts (
    delivery_id      uuid        NOT NULL,
    attempt          integer     NOT NULL,
    at               timestamptz NOT NULL,
    http_status      integer,
    class            text        NOT NULL,
    duration_ms      integer     NOT NULL,
    response_excerpt text,
    PRIMARY KEY (delivery_id, attempt)
);

-- §11 batches: how many of a batch's messages are not yet final. The transaction that makes the
-- last one final (it updates this row, so two such transactions are serialized) emits
-- `batch.finished`; a requeue opens it again.
CREATE TABLE batch_progress (
    batch_id    uuid        PRIMARY KEY,
    total       integer     NOT NULL,
    open        integer     NOT NULL,
    finished_at timestamptz
);

-- A delivery job's claim (`webhooks::deliver::claim`), in one round trip. `outcome`:
-- `gone` (no such delivery), `stale` (a replay gave it a new job, or it is finished),
-- `cancelled` (its subscription is disabled or deleted: now cancelled), `order` (an earlier event
-- of its message is pending: look again at `until`), `capacity` (every slot of its subscription
-- is taken: at `until`, when the first lease ends), or `claimed` (a slot held until
-- now() + p_lease; the event and where to send it).
CREATE FUNCTION webhook_claim(p_delivery uuid, p_job text, p_lease interval)
RETURNS TABLE (outcome text, until timestamptz, subscription_id uuid, message_id uuid,
               event_id text, event_type text, data jsonb, event_at timestamptz, url text,
               secret text, previous_secret text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    d record;
    e_next timestamptz;
    taken smallint;
    i smallint;
BEGIN
    SELECT wd.status, wd.job_id, wd.seq, wd.message_id, wd.subscription_id, wd.after_earlier,
           wd.waiting, ws.enabled AND ws.deleted_at IS NULL AS live, ws.url, ws.secret,
           CASE WHEN ws.previous_secret_until > now() THEN ws.previous_secret END AS previous_secret,
           e.id AS event_id, e.type AS event_type, e.data, e.created_at AS event_at
    INTO d
    FROM webhook_deliveries wd
    JOIN webhook_subscriptions ws ON ws.id = wd.subscription_id
    JOIN webhook_events e ON e.id = wd.event_id
    WHERE wd.id = p_delivery
    FOR UPDATE OF wd;
    IF NOT FOUND THEN
        outcome := 'gone';
        RETURN NEXT;
        RETURN;
    END IF;
    subscription_id := d.subscription_id;
    IF d.job_id <> p_job OR d.status <> 'pending' THEN
        outcome := CASE WHEN d.status = 'cancelled' THEN 'cancelled' ELSE 'stale' END;
        RETURN NEXT;
        RETURN;
    END IF;
    IF NOT d.live THEN
        UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(), waiting = NULL,
               next_attempt_at = NULL
        WHERE id = p_delivery;
        outcome := 'cancelled';
        RETURN NEXT;
        RETURN;
    END IF;
    IF d.after_earlier AND d.message_id IS NOT NULL THEN
        SELECT wd.next_attempt_at INTO e_next
        FROM webhook_deliveries wd
        WHERE wd.subscription_id = d.subscription_id AND wd.message_id = d.message_id
          AND wd.seq < d.seq AND wd.status = 'pending'
        ORDER BY wd.seq LIMIT 1;
        IF FOUND THEN
            UPDATE webhook_deliveries SET waiting = 'order' WHERE id = p_delivery;
            outcome := 'order';
            -- its retry, or (being sent now) at most a lease; it wakes this one when it ends
            until := greatest(coalesce(e_next, now() + p_lease), now()) + interval '100 milliseconds';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    -- Each slot that looked free is tried in turn; taking one waits for a claim or a release
    -- that holds its row at this moment, then checks again that it is free.
    FOR i IN
        SELECT f.slot FROM webhook_slots f
        WHERE f.subscription_id = d.subscription_id
          AND (f.delivery_id IS NULL OR f.until < now() OR f.delivery_id = p_delivery)
        ORDER BY f.delivery_id IS NOT DISTINCT FROM p_delivery DESC,
                 (f.delivery_id IS NULL OR f.until < now()) DESC, f.slot
    LOOP
        UPDATE webhook_slots sl SET delivery_id = p_delivery, until = now() + p_lease
        WHERE sl.subscription_id = d.subscription_id AND sl.slot = i
          AND (sl.delivery_id IS NULL OR sl.until < now() OR sl.delivery_id = p_delivery)
        RETURNING sl.slot INTO taken;
        EXIT WHEN taken IS NOT NULL;
    END LOOP;
    IF taken IS NULL THEN
        outcome := 'capacity';
        until := coalesce((SELECT min(f.until) FROM webhook_slots f
                           WHERE f.subscription_id = d.subscription_id AND f.until > now()),
                          now() + interval '1 second');
        RETURN NEXT;
        RETURN;
    END IF;
    IF d.waiting IS NOT NULL THEN
        UPDATE webhook_deliveries SET waiting = NULL WHERE id = p_delivery;
    END IF;
    outcome := 'claimed';
    message_id := d.message_id;
    event_id := d.event_id;
    event_type := d.event_type;
    data := d.data;
    event_at := d.event_at;
    url := d.url;
    secret := d.secret;
    previous_secret := d.previous_secret;
    RETURN NEXT;
END
$$;
