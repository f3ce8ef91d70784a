-- WhatsApp Cloud API (SPEC §13): which Meta-approved template sends each of our templates.
-- Our placeholders, in `params` order, fill {{1}}..{{n}} of its body; `languages` maps our
-- language (`id`, `en`) to Meta's code (`id`, `en_US`). A send refused with a template error
-- (132000, 132001) flags the mapping until it is saved again.
CREATE TABLE cloud_api_templates (
    key           text        PRIMARY KEY REFERENCES templates (key) ON DELETE CASCADE,
    name          text        NOT NULL,
    languages     jsonb       NOT NULL CHECK (jsonb_typeof(languages -> 'id') = 'string'),
    params        text[]      NOT NULL DEFAULT '{}',
    flagged_code  integer,
    flagged_error text,
    flagged_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text        NOT NULL
);
