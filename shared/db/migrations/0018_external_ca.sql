-- Issue 13, external CAs (DESIGN.md 9, invariant 10): CAs of type 'acme', whose certificates a worker obtains
-- from another ACME CA, one upstream order per request.

-- An ACME CA is a row of certificate_authorities (profiles and certificates refer to it as to any CA) of type
-- 'acme', with neither parent, certificate nor CA key of its own: its ACME account key lives in upstream_acme_accounts.
ALTER TABLE certificate_authorities DROP CONSTRAINT certificate_authorities_type_check;
ALTER TABLE certificate_authorities ADD CONSTRAINT certificate_authorities_type_check
    CHECK (type IN ('root', 'intermediate', 'acme'));
ALTER TABLE certificate_authorities DROP CONSTRAINT certificate_authorities_check;
ALTER TABLE certificate_authorities ADD CONSTRAINT certificate_authorities_parent_check
    CHECK ((type = 'intermediate') = (parent_ca_id IS NOT NULL));
ALTER TABLE certificate_authorities DROP CONSTRAINT certificate_authorities_check1;
ALTER TABLE certificate_authorities ADD CONSTRAINT certificate_authorities_active_check
    CHECK (status <> 'active' OR (type = 'acme' AND encrypted_private_key IS NULL)
           OR (certificate_pem IS NOT NULL AND encrypted_private_key IS NOT NULL));

-- The upstream account of an ACME CA. The account key is made by a worker and sealed under the project's CA
-- data key (the CA root key's; no API process can open it), bound to this row. Secrets the creator gave (the
-- EAB HMAC key, the RFC 2136 TSIG secret) arrive sealed under the root key (the API's) and a worker re-seals
-- them under the CA root key when it registers the account (secrets_sealed_by).
CREATE TABLE upstream_acme_accounts (
    ca_id                  uuid PRIMARY KEY REFERENCES certificate_authorities(id) ON DELETE CASCADE,
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    directory_url          text NOT NULL,
    account_email          text NOT NULL,
    eab_kid                text,
    -- {provider, nameserver, port, zone, tsigKeyName, tsigAlgorithm}: never the TSIG secret (see secrets).
    dns_provider           jsonb,
    ca_bundle              text,
    encrypted_secrets      bytea,
    secrets_sealed_by      text NOT NULL DEFAULT 'root' CHECK (secrets_sealed_by IN ('root', 'ca-root')),
    encrypted_account_key  bytea,
    account_url            text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- Which path issues a request: 'internal' (a worker signs it, kms.signing) or 'external' (a worker obtains it
-- from an external CA, kms.external). Set by the registration authority from the profile's CA. The internal
-- claims take only 'internal' rows, so an external request is never signed locally nor ordered twice.
ALTER TABLE certificate_requests
    ADD COLUMN issuer_kind text NOT NULL DEFAULT 'internal' CHECK (issuer_kind IN ('internal', 'external'));
CREATE INDEX certificate_requests_external_open_idx ON certificate_requests (updated_at)
    WHERE issuer_kind = 'external' AND status IN ('pending', 'processing');

-- One upstream order per request (invariant 10): the row is written before the order is placed, and the
-- order's URL stored in its own commit before the order is polled; every later attempt resumes that URL.
CREATE TABLE external_orders (
    request_id             uuid PRIMARY KEY REFERENCES certificate_requests(id) ON DELETE CASCADE,
    ca_id                  uuid NOT NULL REFERENCES certificate_authorities(id),
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- The id the certificate will get: a server-made key is sealed bound to it before the order is placed.
    certificate_id         uuid NOT NULL,
    csr_pem                text,
    encrypted_private_key  bytea,
    key_algorithm          text,
    order_url              text,
    -- creating (nothing asked upstream yet) | placing (a newOrder was sent, its answer not yet recorded: a
    -- later attempt looks for that order upstream before it places one) | ordered | done | failed
    state                  text NOT NULL DEFAULT 'creating'
                           CHECK (state IN ('creating', 'placing', 'ordered', 'done', 'failed')),
    -- Transient upstream failures (unreachable, 5xx, rate limited), each retried after a backoff.
    upstream_attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at        timestamptz,
    last_upstream_error    text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX external_orders_url_idx ON external_orders (order_url) WHERE order_url IS NOT NULL;

-- http-01 answers: the worker writes the key authorization of a challenge, and the API's
-- /.well-known/acme-challenge/{token} route serves it from here (the API calls nobody).
CREATE TABLE acme_http01_answers (
    token              text PRIMARY KEY,
    key_authorization  text NOT NULL,
    request_id         uuid REFERENCES certificate_requests(id) ON DELETE CASCADE,
    expires_at         timestamptz NOT NULL
);
