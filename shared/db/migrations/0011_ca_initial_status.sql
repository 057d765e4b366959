-- Upstream's create body names the status a CA starts in (DESIGN.md 5.3: `status: active|disabled`). The API
-- records it here; the worker that makes the key and certificate leaves the CA in it instead of 'active'.
-- The default keeps code of the previous release creating active CAs.
ALTER TABLE certificate_authorities
    ADD COLUMN status_after_creation text NOT NULL DEFAULT 'active'
        CHECK (status_after_creation IN ('active', 'disabled'));
