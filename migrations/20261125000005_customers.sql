-- Customers and their vehicles (SPEC §5). Workshop data arrives incomplete; the reminder fan-out
-- skips what it cannot use and says why, so only the types are enforced here.
CREATE TABLE customers (
    id         uuid PRIMARY KEY,
    nama       text,
    hp         text,
    alamat     text,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    id              uuid PRIMARY KEY,
    customer_id     uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    no_pol          text,
    model           text,
    next_visit_date date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vehicles_customer ON vehicles (customer_id);
-- The fan-out's range scan: vehicles due in the next few days.
CREATE INDEX vehicles_next_visit ON vehicles (next_visit_date);
