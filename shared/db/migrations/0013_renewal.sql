-- Issue 10, server-driven renewal (DESIGN.md 7). A profile's apiConfig{autoRenew, renewBeforeDays} is
-- stamped on each server-key certificate at issuance (and changed per certificate by PATCH /{id}/config):
-- the certificate falls due for renewal at renewal_due_at = notAfter - renewBeforeDays.

-- Revocation (another change of issue 10) adds this column too; either may run first.
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS revoked_at timestamptz;

ALTER TABLE certificates
    ADD COLUMN auto_renew         boolean NOT NULL DEFAULT false,
    ADD COLUMN renew_before_days  integer CHECK (renew_before_days BETWEEN 1 AND 30),
    ADD COLUMN renewal_due_at     timestamptz,
    -- Why the last server-driven renewal failed; the scan does not retry a certificate that has one.
    ADD COLUMN renewal_error      text,
    -- The renewal request the scan registered: set in the transaction that registers it, so a second
    -- scan never renews the same certificate again (renewed_by_id is only set once it is signed).
    ADD COLUMN renewal_request_id uuid REFERENCES certificate_requests(id);

-- The scan reads only certificates still waiting for their renewal: rows leave this index once scheduled,
-- renewed, failed, revoked or deleted, so it stays small and the scan flat however many are stored.
CREATE INDEX certificates_renewal_due_idx ON certificates (renewal_due_at)
    WHERE auto_renew AND renewal_due_at IS NOT NULL AND renewed_by_id IS NULL AND renewal_request_id IS NULL
      AND renewal_error IS NULL AND revoked_at IS NULL AND deleted_at IS NULL;
