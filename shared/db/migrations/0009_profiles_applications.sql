-- Issue 9: profiles as upstream has them (ACME and EST enrollment configs, external configs) and
-- applications, which group a project's profiles for the newer clients (DESIGN.md 5.5).

ALTER TABLE certificate_profiles DROP CONSTRAINT certificate_profiles_enrollment_type_check;
ALTER TABLE certificate_profiles
    ADD CONSTRAINT certificate_profiles_enrollment_type_check CHECK (enrollment_type IN ('api', 'acme', 'est')),
    ADD COLUMN acme_config jsonb,
    ADD COLUMN est_config jsonb,
    ADD COLUMN external_configs jsonb;
-- The list filters: ?caId= and the profile's certificates.
CREATE INDEX certificate_profiles_ca_idx ON certificate_profiles (ca_id) WHERE ca_id IS NOT NULL;
CREATE INDEX certificates_profile_idx ON certificates (profile_id, created_at DESC);

CREATE TABLE applications (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

-- A profile in an application; deleting either removes the link only.
CREATE TABLE application_profiles (
    application_id  uuid NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    profile_id      uuid NOT NULL REFERENCES certificate_profiles(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, profile_id)
);
CREATE INDEX application_profiles_profile_idx ON application_profiles (profile_id);
