-- A gateway call the delivery policy does not count (a 429, a 401/403: the message is snoozed,
-- no attempt spent) is still kept in the message's history.
ALTER TABLE message_attempts DROP CONSTRAINT message_attempts_outcome_check;
ALTER TABLE message_attempts ADD CONSTRAINT message_attempts_outcome_check
    CHECK (outcome IN ('sent', 'retry', 'failed', 'ambiguous', 'snoozed'));
