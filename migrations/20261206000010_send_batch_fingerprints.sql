-- A batch's idempotency fingerprint is the SHA-256 (hex) of its canonical body, no longer the
-- body itself (a 1,000-item batch stored megabytes). Batches stored before keep replaying.
UPDATE send_batches
SET request_fingerprint = encode(sha256(convert_to(request_fingerprint, 'UTF8')), 'hex')
WHERE length(request_fingerprint) <> 64 OR request_fingerprint !~ '^[0-9a-f]{64}$';
