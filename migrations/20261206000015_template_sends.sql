-- Template sends (SPEC §10: a send may give `template: {key, values?, language?}` instead of
-- `body`; §13: a gateway that sends Meta templates fills their parameters from our placeholders).

-- A message rendered from a template (a template send, a reminder) records, beside
-- `template_key`/`template_version`, the language of the body used and the value of every
-- placeholder available when it was rendered. NULL for messages with their own text (and for
-- template messages made before this).
ALTER TABLE messages
    ADD COLUMN template_language text,
    ADD COLUMN template_values   jsonb;
-- The columns are new, so every row satisfies these: NOT VALID spares the scan of a large table
-- (they hold for every row written from now on all the same).
ALTER TABLE messages
    ADD CONSTRAINT messages_template_language CHECK (template_language IN ('id', 'en')) NOT VALID,
    ADD CONSTRAINT messages_template_values CHECK (jsonb_typeof(template_values) = 'object') NOT VALID;

-- Whom a number belongs to, for the placeholders and language of a template send: a customer by
-- `hp` (stored as typed, so compared in its normalized form) or a manual record by `no_hp`
-- (stored normalized).
--
-- `phone_normalized` is `PhoneNumber::parse` (src/messages/phone.rs) in SQL, NULL where that
-- refuses the number: strip spaces, `-`, `.`, `(`, `)`; drop a leading `+`; `0…` becomes `62…`,
-- a bare `8…` `628…`; 10 to 15 digits, not starting with 0. (Surrounding whitespace is trimmed
-- as ASCII whitespace; the Rust side trims any.) A test holds the two together.
CREATE FUNCTION phone_normalized(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    t text := regexp_replace(btrim(raw, E' \t\n\r\f\v'), '^\+', '');
    d text;
BEGIN
    IF t !~ '^[0-9 ().-]*$' THEN
        RETURN NULL;
    END IF;
    d := translate(t, ' ().-', '');
    IF d LIKE '0%' THEN
        d := '62' || substr(d, 2);
    ELSIF d LIKE '8%' THEN
        d := '62' || d;
    END IF;
    RETURN CASE WHEN d ~ '^[1-9][0-9]{9,14}$' THEN d END;
END
$$;

CREATE INDEX customers_phone ON customers (phone_normalized(hp));
CREATE INDEX manual_whatsapp_no_hp ON manual_whatsapp (no_hp);
