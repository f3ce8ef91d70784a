-- SPEC §15: a campaign's own send window (`HH:MM-HH:MM` in APP_TIMEZONE), on top of the delivery
-- policy's: outside it the campaign's unsent messages are parked. `window_parked` says they
-- are, so that the driver acts when the window opens or closes, not on every pass.
ALTER TABLE campaigns
    ADD COLUMN send_window   text,
    ADD COLUMN window_parked boolean NOT NULL DEFAULT false;
