-- Issue 12: ACME enrollment (RFC 8555) for profiles with enrollmentType acme (DESIGN.md 8).

-- Replay nonces, single use, shared by every API process. UNLOGGED: a crash that loses them only makes
-- clients retry with a fresh one (badNonce is a retryable error every ACME client handles).
CREATE UNLOGGED TABLE acme_nonces (
    nonce      text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX acme_nonces_expires_idx ON acme_nonces (expires_at);

-- A profile's external account binding key (the HMAC key clients use with kid = the profile id),
-- sealed under the project's data key and bound to this row (as private keys are).
CREATE TABLE acme_eab_keys (
    profile_id uuid PRIMARY KEY REFERENCES certificate_profiles(id) ON DELETE CASCADE,
    project_id uuid NOT NULL,
    sealed_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE acme_accounts (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id     uuid NOT NULL REFERENCES certificate_profiles(id) ON DELETE CASCADE,
    project_id     uuid NOT NULL,
    jwk            jsonb NOT NULL,
    jwk_thumbprint text NOT NULL,
    status         text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'deactivated', 'revoked')),
    contact        jsonb NOT NULL DEFAULT '[]'::jsonb,
    eab_kid        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (profile_id, jwk_thumbprint)
);

CREATE TABLE acme_orders (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id     uuid NOT NULL REFERENCES acme_accounts(id) ON DELETE CASCADE,
    profile_id     uuid NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
    identifiers    jsonb NOT NULL,
    expires_at     timestamptz NOT NULL,
    error          jsonb,
    -- finalize: the ordinary certificate request (shared.registration), then its certificate
    request_id     uuid REFERENCES certificate_requests(id),
    certificate_id uuid REFERENCES certificates(id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_orders_account_idx ON acme_orders (account_id, created_at);
CREATE INDEX acme_orders_expires_idx ON acme_orders (expires_at) WHERE status <> 'valid';
CREATE INDEX acme_orders_certificate_idx ON acme_orders (certificate_id) WHERE certificate_id IS NOT NULL;

CREATE TABLE acme_authorizations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id         uuid NOT NULL REFERENCES acme_orders(id) ON DELETE CASCADE,
    identifier_type  text NOT NULL CHECK (identifier_type IN ('dns', 'ip')),
    identifier_value text NOT NULL,
    wildcard         boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_authorizations_order_idx ON acme_authorizations (order_id);

CREATE TABLE acme_challenges (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    authorization_id uuid NOT NULL REFERENCES acme_authorizations(id) ON DELETE CASCADE,
    type             text NOT NULL CHECK (type IN ('http-01', 'dns-01')),
    token            text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    error            jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    -- when the client asked for validation: the worker gives up once the bounded total time has passed
    started_at       timestamptz,
    validated_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_challenges_authorization_idx ON acme_challenges (authorization_id);
CREATE INDEX acme_challenges_processing_idx ON acme_challenges (updated_at) WHERE status = 'processing';
