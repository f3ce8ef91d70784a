-- SPEC §15 segments: saved, named filters over vehicles and manual records.
CREATE TABLE segments (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    source     text        NOT NULL CHECK (source IN ('vehicles', 'manual', 'both')),
    filters    jsonb       NOT NULL DEFAULT '{}',
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX segments_name ON segments (lower(name));

-- A segment is one recipient per number: the customer's number in its normalized form, kept
-- beside what was typed (`phone_normalized` is PL/pgSQL: a million calls take seconds).
ALTER TABLE customers
    ADD COLUMN phone text GENERATED ALWAYS AS (phone_normalized(hp)) STORED;
-- Lookups by number (the console, template sends) read the column now.
DROP INDEX customers_phone;
CREATE INDEX customers_phone ON customers (phone);
