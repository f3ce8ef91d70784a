-- Templates, personalisation and the reminder calendar (SPEC §10).

-- Message texts live here. A template is a key; each change is a new version holding one body
-- per language ({"id": ..., "en": ...}; `id` always present). Messages record the key and
-- version they were rendered from.
CREATE TABLE templates (
    key        text        PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,63}$'),
    builtin    boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE template_versions (
    key        text        NOT NULL REFERENCES templates (key) ON DELETE CASCADE,
    version    integer     NOT NULL CHECK (version >= 1),
    bodies     jsonb       NOT NULL CHECK (jsonb_typeof(bodies -> 'id') = 'string'),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL,
    PRIMARY KEY (key, version)
);

-- The built-in texts: version 1 in Indonesian is exactly what the service sent before templates
-- (SPEC §5 and §7), with the salutation as a placeholder; English is new.
INSERT INTO templates (key, builtin) VALUES ('maintenance_reminder', true), ('manual_reminder', true);
INSERT INTO template_versions (key, version, bodies, created_by) VALUES
('maintenance_reminder', 1, jsonb_build_object(
    'id', $t${salutation} {nama} untuk nomor kendaraan {no_pol} sebentar lagi tiba saat pemeliharaan rutin pada tanggal {tanggal_dmy}, daftarkan segera melalui nomor pelayanan kami {service_phone}$t$,
    'en', $t${salutation} {nama}, your vehicle {no_pol} is due for its routine maintenance on {tanggal}. Book your service now through our service number {service_phone}$t$
), 'built-in'),
('manual_reminder', 1, jsonb_build_object(
    'id', $t$Halo {salutation} {nama},

Kami mengingatkan bahwa kendaraan dengan nomor polisi {no_pol} Anda akan jatuh tempo untuk service maintenance pada:

📅 {tanggal}

Mohon segera menghubungi kami untuk melakukan penjadwalan service:
📞 {service_phone}

Terima kasih atas kepercayaan Anda.$t$,
    'en', $t$Hello {salutation} {nama},

This is a reminder that your vehicle with number plate {no_pol} is due for service maintenance on:

📅 {tanggal}

Please contact us to schedule your service:
📞 {service_phone}

Thank you for your trust.$t$
), 'built-in');

ALTER TABLE messages
    ADD COLUMN template_key     text,
    ADD COLUMN template_version integer;

-- How a customer is addressed and in which language. A NULL salutation means "not given"
-- (the seed's `Bapak`, unless the name already starts with one); '' means none.
ALTER TABLE customers
    ADD COLUMN salutation text,
    ADD COLUMN language   text NOT NULL DEFAULT 'id' CHECK (language IN ('id', 'en'));
ALTER TABLE manual_whatsapp
    ADD COLUMN salutation text,
    ADD COLUMN language   text NOT NULL DEFAULT 'id' CHECK (language IN ('id', 'en'));

-- The last-visit rule: a vehicle with no explicit next visit is due SERVICE_INTERVAL_MONTHS after
-- its last one. The fan-out walks those over this index, a range of last visits per pass.
ALTER TABLE vehicles ADD COLUMN last_visit_date date;
CREATE INDEX vehicles_last_visit ON vehicles (last_visit_date, id) WHERE next_visit_date IS NULL;
-- The same for manual records without `next_service`.
CREATE INDEX manual_whatsapp_last_service ON manual_whatsapp (last_service, id) WHERE next_service IS NULL;

-- The reminder calendar: days before the due date on which a reminder goes out (NULL: the
-- environment's REMINDER_DAYS_BEFORE).
ALTER TABLE scheduler_settings ADD COLUMN days_before integer[];

-- The daily run's manual pass.
ALTER TABLE fanout_runs
    ADD COLUMN manual_eligible        integer,
    ADD COLUMN manual_reminder_queued integer,
    ADD COLUMN manual_already_queued  integer,
    ADD COLUMN manual_skipped         integer;
