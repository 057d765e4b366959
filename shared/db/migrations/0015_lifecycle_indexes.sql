-- Issue 10, lookups that stay flat at a million certificates (tests/lifecycle/test_lifecycle_indexes.py).
-- Before each CRL a worker asks for the newest revocation of the CA (does its newest CRL cover them all?).
-- Through certificates_revoked_by_issuer_idx (ca_id, not_after) that read every revocation the CA ever made,
-- expired ones included: 10,000 rows at a million certificates, for each revocation's CRL task and each
-- refresh. Ordered by revoked_at, max(revoked_at) is the last entry of the CA's range: one row.
CREATE INDEX IF NOT EXISTS certificates_latest_revocation_idx
    ON certificates (ca_id, revoked_at) WHERE revoked_at IS NOT NULL;
