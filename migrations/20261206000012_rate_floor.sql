-- A configured rate is 0 (no limit) or at least 0.05 calls per second (the floor of the adaptive
-- slow-down): below it a slot would open days apart. A rate stored before the API refused such
-- values is raised to the floor.
UPDATE delivery_policy SET rate_per_second = 0.05
WHERE rate_per_second > 0 AND rate_per_second < 0.05;

ALTER TABLE delivery_policy ADD CONSTRAINT delivery_policy_rate_floor
    CHECK (rate_per_second = 0 OR rate_per_second >= 0.05);
