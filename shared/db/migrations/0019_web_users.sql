-- Issue 15: human users of the web UI, their project roles, and their sign-in sessions.

-- A user signs in with an e-mail address and a password, stored as a scrypt hash like a client secret
-- (shared.secrets.credentials). Addresses are compared in lower case: one person, one row.
CREATE TABLE web_users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT web_users_email_key UNIQUE (email)
);

-- The same roles as machine identities (shared.access.ROLE_RANK), one per project the user belongs to.
CREATE TABLE web_user_roles (
    user_id    uuid NOT NULL REFERENCES web_users(id) ON DELETE CASCADE,
    project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('admin', 'issuer', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, project_id)
);
CREATE INDEX web_user_roles_project_idx ON web_user_roles (project_id);

-- Only the SHA-256 digest of a session's cookie value is stored (the value has full entropy), so a read
-- of this table signs nobody in. A session ends when idle past its expires_at (moved forward on use),
-- or at sign-out. The CSRF token is the synchronizer token of the session's forms.
CREATE TABLE web_sessions (
    digest       bytea PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES web_users(id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX web_sessions_user_idx ON web_sessions (user_id);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

-- The web UI's certificates list filtered to "expiring within N days" walks this, soonest first
-- (shared.db.certificate_listing); newest first walks certificates_project_idx.
CREATE INDEX certificates_project_not_after_idx ON certificates (project_id, not_after, id);
