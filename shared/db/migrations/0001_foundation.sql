-- Foundation: projects, machine identities, access tokens and the append-only audit log.

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A machine identity belongs to exactly one project and holds one role there.
-- The client secret is stored only as a slow salted hash (scrypt, see shared.credentials).
CREATE TABLE identities (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role         text NOT NULL CHECK (role IN ('admin', 'issuer', 'viewer')),
    client_id    text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX identities_project_idx ON identities (project_id) WHERE deleted_at IS NULL;

-- Access tokens are opaque random strings; only their SHA-256 digest is stored.
-- Deleting an identity deletes its tokens, so they stop working at once.
CREATE TABLE access_tokens (
    token_digest  bytea PRIMARY KEY,
    identity_id   uuid NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX access_tokens_identity_idx ON access_tokens (identity_id);
CREATE INDEX access_tokens_expiry_idx ON access_tokens (expires_at);

-- Append-only: a trigger refuses UPDATE and DELETE, so history cannot be rewritten by the service.
CREATE TABLE audit_events (
    id            bigserial PRIMARY KEY,
    project_id    uuid,
    actor         text NOT NULL,
    action        text NOT NULL,
    subject_type  text,
    subject_id    text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_project_idx ON audit_events (project_id, id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
