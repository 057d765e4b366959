-- Issue 10, revocation and CRLs (DESIGN.md 5.6, 5.7, 7). IF NOT EXISTS: another branch may add revoked_at too.
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
ALTER TABLE certificates ADD COLUMN IF NOT EXISTS revocation_reason text;

-- A CA's CRL lists its revoked, unexpired serials: kept flat however many certificates the CA issued.
CREATE INDEX IF NOT EXISTS certificates_revoked_by_issuer_idx
    ON certificates (ca_id, not_after) WHERE revoked_at IS NOT NULL;
-- Revocation status by serial per issuer (OCSP, and the lookup of one serial).
CREATE INDEX IF NOT EXISTS certificates_issuer_serial_idx ON certificates (ca_id, serial_number);

-- Every CRL a worker signed; the newest per CA is the one served. crl_number strictly increases per CA.
CREATE TABLE certificate_revocation_lists (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ca_id        uuid NOT NULL REFERENCES certificate_authorities(id) ON DELETE CASCADE,
    crl_number   bigint NOT NULL,
    this_update  timestamptz NOT NULL,
    next_update  timestamptz NOT NULL,
    -- The moment the revocations it lists were read: a revocation made later is not on it.
    covered_at   timestamptz NOT NULL,
    der          bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ca_id, crl_number),
    CHECK (this_update < next_update)
);
