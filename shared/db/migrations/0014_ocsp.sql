-- Issue 10, OCSP (DESIGN.md 7): delegated OCSP signing certificates. A worker issues one per CA from the
-- CA's key (audited like every CA signature); the API signs responses with its key, which is sealed
-- under the project's data key (the API's root key opens it; no CA key ever leaves the workers).
CREATE TABLE ocsp_responders (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ca_id                  uuid NOT NULL REFERENCES certificate_authorities(id) ON DELETE CASCADE,
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    serial_number          text NOT NULL,
    not_before             timestamptz NOT NULL,
    not_after              timestamptz NOT NULL,
    certificate_pem        text NOT NULL,
    encrypted_private_key  bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (not_before < not_after)
);
-- The responder of a CA is its newest one.
CREATE INDEX ocsp_responders_ca_idx ON ocsp_responders (ca_id, not_after DESC);
