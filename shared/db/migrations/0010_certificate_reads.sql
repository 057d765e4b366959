-- Issue 9, certificates and requests on upstream's wire contract (DESIGN.md 5.6).

-- DELETE /certificates/{id} hides a certificate from the certificate routes; the row stays so that
-- its request still reads as issued, its serial stays reserved, and the audit log's subject still
-- names a certificate the CA signed (revocation lists will need it too).
ALTER TABLE certificates ADD COLUMN deleted_at timestamptz;

-- The request list filters by status or profile and sorts by updatedAt as well as createdAt.
CREATE INDEX certificate_requests_project_status_idx
    ON certificate_requests (project_id, status, created_at DESC, id DESC);
CREATE INDEX certificate_requests_project_profile_idx
    ON certificate_requests (project_id, profile_id, created_at DESC, id DESC);
CREATE INDEX certificate_requests_project_updated_idx
    ON certificate_requests (project_id, updated_at DESC, id DESC);
