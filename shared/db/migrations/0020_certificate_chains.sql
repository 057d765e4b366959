-- Issue 11: a certificate's chain (and its issuing CA certificate) is stored once, not again with every
-- certificate: about 2.4 KB of the ~3.4 KB a certificate row took was the same CA certificates. New rows
-- point at their chain by digest; rows stored before keep theirs inline (read as coalesce(inline, shared)).
CREATE TABLE certificate_chains (
    digest      bytea PRIMARY KEY,  -- SHA-256 of chain || NUL || issuing_ca
    chain       text NOT NULL,
    issuing_ca  text,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE certificates ADD COLUMN chain_digest bytea REFERENCES certificate_chains(digest);
ALTER TABLE certificates ALTER COLUMN chain_pem DROP NOT NULL;
