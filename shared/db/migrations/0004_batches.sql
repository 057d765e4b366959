-- Bulk batches: a batch is a set of certificate requests, processed by chunk tasks.

CREATE TABLE certificate_batches (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    profile_id    uuid NOT NULL REFERENCES certificate_profiles(id),
    total         integer NOT NULL CHECK (total > 0),
    requested_by  uuid,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificate_batches_project_idx ON certificate_batches (project_id, created_at DESC);

-- Every item of a batch is an ordinary certificate request (its id works on the single-request API).
ALTER TABLE certificate_requests
    ADD COLUMN batch_id uuid REFERENCES certificate_batches(id) ON DELETE CASCADE,
    ADD COLUMN batch_index integer;
CREATE UNIQUE INDEX certificate_requests_batch_idx ON certificate_requests (batch_id, batch_index)
    WHERE batch_id IS NOT NULL;
