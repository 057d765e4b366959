-- Issue 8 hardening.

-- Batches take an Idempotency-Key like single requests: a client that retries after a lost answer
-- (or a 503) gets the batch it already made, not a second one with twice the certificates.
ALTER TABLE certificate_batches
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_hash bytea,
    ADD COLUMN failed_at_submission integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX certificate_batches_idempotency_idx ON certificate_batches (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
