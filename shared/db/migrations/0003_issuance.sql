-- Asynchronous issuance: certificate requests (the truth about every request) and certificates.

CREATE TABLE certificate_requests (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id         uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    profile_id         uuid NOT NULL REFERENCES certificate_profiles(id),
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'processing', 'issued', 'failed')),
    -- What the caller asked for, as validated: the worker re-evaluates these against the current
    -- profile and policy, and trusts nothing else (DESIGN.md invariant 6).
    csr_pem            text,
    attributes         jsonb,
    server_key         boolean NOT NULL,
    remove_roots       boolean NOT NULL DEFAULT false,
    requested_by       uuid,
    idempotency_key    text,
    request_hash       bytea,
    renewal_of         uuid,
    -- The claim: a worker sets processing + a lease + its own claim token; only that token may finish.
    claim_token        uuid,
    lease_expires_at   timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    last_error         text,
    error_message      text,
    certificate_id     uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (csr_pem IS NOT NULL OR server_key),
    CHECK (status <> 'failed' OR error_message IS NOT NULL)
);
-- Idempotency keys are kept as long as the request (at least the 24 hours the contract promises).
CREATE UNIQUE INDEX certificate_requests_idempotency_idx
    ON certificate_requests (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX certificate_requests_project_idx ON certificate_requests (project_id, created_at DESC, id DESC);
CREATE INDEX certificate_requests_open_idx ON certificate_requests (updated_at)
    WHERE status IN ('pending', 'processing');

CREATE TABLE certificates (
    id                     uuid PRIMARY KEY,
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    profile_id             uuid NOT NULL REFERENCES certificate_profiles(id),
    -- At most one certificate per request, whatever the broker or a dying worker does (DESIGN.md 4.2).
    request_id             uuid NOT NULL UNIQUE REFERENCES certificate_requests(id),
    ca_id                  uuid REFERENCES certificate_authorities(id),
    serial_number          text NOT NULL,
    common_name            text,
    key_algorithm          text NOT NULL,
    certificate_pem        text NOT NULL,
    chain_pem              text NOT NULL,
    issuing_ca_pem         text,
    not_before             timestamptz NOT NULL,
    not_after              timestamptz NOT NULL,
    -- Only for keys the server generated; AES-256-GCM bound to this row (see shared.envelope).
    encrypted_private_key  bytea,
    renewed_from_id        uuid REFERENCES certificates(id),
    renewed_by_id          uuid REFERENCES certificates(id),
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_project_idx ON certificates (project_id, created_at DESC);

ALTER TABLE certificate_requests
    ADD CONSTRAINT certificate_requests_certificate_fk FOREIGN KEY (certificate_id) REFERENCES certificates(id)
        DEFERRABLE INITIALLY DEFERRED,
    ADD CONSTRAINT certificate_requests_renewal_fk FOREIGN KEY (renewal_of) REFERENCES certificates(id);
