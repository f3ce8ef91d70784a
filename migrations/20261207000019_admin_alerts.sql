-- SPEC §14: messages of kind `admin` go to the workshop's own ADMIN_PHONES (alerts, the daily
-- summary); Alertmanager's notifications are remembered per (group, status, alerts) so that a
-- repeat within ADMIN_ALERT_REPEAT_SECS sends nothing; template `admin_alert` is built in.
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('adhoc', 'maintenance', 'manual', 'system', 'admin'));

CREATE TABLE admin_alert_notifications (
    -- sha256 (hex) of the group key, the status and the sorted fingerprints
    dedup_key    text        PRIMARY KEY,
    group_key    text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('firing', 'resolved')),
    fingerprints text[]      NOT NULL,
    notified_at  timestamptz NOT NULL,
    -- how many notifications of it were taken (the first and the repeats it swallowed)
    received     integer     NOT NULL DEFAULT 1
);

INSERT INTO templates (key, builtin) VALUES ('admin_alert', true);
INSERT INTO template_versions (key, version, bodies, created_by) VALUES
('admin_alert', 1, jsonb_build_object(
    'id', $t$⚠️ [{status}] {alert_names}
{summary}
Sejak {since} · {count} peringatan · {workshop_name}$t$,
    'en', $t$⚠️ [{status}] {alert_names}
{summary}
Since {since} · {count} alert(s) · {workshop_name}$t$
), 'built-in');
