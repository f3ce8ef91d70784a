-- A delivery that waits for an earlier event of its message ('order') could miss its wake-up:
-- the earlier delivery's record looked for waiting deliveries in the statement that finished
-- it, with a snapshot taken before the waiting one's claim committed, and the waiting one was
-- still running (not yet snoozed) then. It then waited a whole lease (timeout + 10 s). Now the
-- claim locks the earlier pending deliveries FOR SHARE and the claim's verdict (the snooze) is
-- written in the claim's transaction; the record wakes in a statement after its update.

CREATE OR REPLACE FUNCTION webhook_claim(p_delivery uuid, p_job text, p_lease interval)
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
        -- Wait for a record of an earlier event that is under way, and keep it from starting
        -- until this claim's transaction ends: its wake-up (a statement after its update) then
        -- sees this delivery waiting and its job snoozed, so the wake-up is never lost.
        PERFORM 1 FROM webhook_deliveries wd
        WHERE wd.subscription_id = d.subscription_id AND wd.message_id = d.message_id
          AND wd.seq < d.seq AND wd.status = 'pending'
        FOR SHARE OF wd;
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
