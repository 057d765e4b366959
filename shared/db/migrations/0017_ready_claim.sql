-- Issue 11: a worker woken by the doorbell claims every ready single request, oldest first
-- (shared.db.requests.claim_ready); this index holds only those, so the claim stays cheap behind a
-- backlog of batch items or a million finished requests.
CREATE INDEX certificate_requests_ready_idx ON certificate_requests (created_at)
    WHERE status = 'pending' AND batch_id IS NULL;
