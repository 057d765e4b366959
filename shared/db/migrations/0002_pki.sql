-- PKI core: per-project data keys, internal CAs, certificate policies and profiles, issued serials.

-- One data key per project, wrapped (AES-256-GCM) by the root key; rotation re-wraps these rows only.
CREATE TABLE project_data_keys (
    project_id   uuid PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    wrapped_key  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz
);

CREATE TABLE certificate_authorities (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name                   text NOT NULL,
    type                   text NOT NULL CHECK (type IN ('root', 'intermediate')),
    parent_ca_id           uuid REFERENCES certificate_authorities(id),
    -- pending: recorded by the API, waiting for a worker to make its key and certificate.
    status                 text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'active', 'disabled', 'failed')),
    subject                jsonb NOT NULL,
    key_algorithm          text NOT NULL,
    max_path_length        integer,
    ttl_seconds            bigint,
    requested_not_after    timestamptz,
    serial_number          text,
    not_before             timestamptz,
    not_after              timestamptz,
    certificate_pem        text,
    chain_pem              text,
    -- AES-256-GCM under the project's data key; associated data binds it to this row.
    encrypted_private_key  bytea,
    error_message          text,
    attempts               integer NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name),
    CHECK ((type = 'root') = (parent_ca_id IS NULL)),
    CHECK (status <> 'active' OR (certificate_pem IS NOT NULL AND encrypted_private_key IS NOT NULL))
);
CREATE INDEX certificate_authorities_project_idx ON certificate_authorities (project_id, created_at);
CREATE INDEX certificate_authorities_pending_idx ON certificate_authorities (created_at) WHERE status = 'pending';

CREATE TABLE certificate_policies (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    rules        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE certificate_profiles (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    slug                   text NOT NULL,
    description            text NOT NULL DEFAULT '',
    issuer_type            text NOT NULL CHECK (issuer_type IN ('ca', 'self-signed')),
    ca_id                  uuid REFERENCES certificate_authorities(id),
    certificate_policy_id  uuid NOT NULL REFERENCES certificate_policies(id),
    enrollment_type        text NOT NULL DEFAULT 'api' CHECK (enrollment_type IN ('api')),
    api_config             jsonb NOT NULL DEFAULT '{}'::jsonb,
    defaults               jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, slug),
    CHECK ((issuer_type = 'ca') = (ca_id IS NOT NULL))
);

-- Every serial an issuer has ever used (CA and leaf certificates alike): never reused (DESIGN.md 4.3).
-- issuer_id is the issuing CA, or the certificate itself when it is self-signed.
CREATE TABLE issued_serials (
    issuer_id      uuid NOT NULL,
    serial_number  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, serial_number)
);
