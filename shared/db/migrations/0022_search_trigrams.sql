-- The substring searches, served by trigram indexes instead of reading every row (with a million stored, the
-- request search took 4.4 s at p95). A search is ILIKE '%text%': a B-tree cannot serve a pattern that starts
-- with a wildcard, a GIN index of pg_trgm's trigrams can (it narrows to the rows holding every trigram of
-- the text, then rechecks each). Text shorter than 3 characters has no trigram: such a search reads the
-- whole index or the table (still right, only slower).
-- pg_trgm ships with PostgreSQL (contrib: Debian's postgresql-15, the postgres:15 image) and is a trusted
-- extension (PostgreSQL 13+): the owner of the database may create it, a superuser is not needed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The request search (shared.db.requests._source): the certificate's common name, and the common name the
-- request asked for, what it shows while it has no certificate (pending, failed).
CREATE INDEX certificates_common_name_trgm_idx ON certificates USING gin (common_name gin_trgm_ops);
CREATE INDEX certificate_requests_common_name_trgm_idx
    ON certificate_requests USING gin ((attributes->>'commonName') gin_trgm_ops);
-- A profile's certificate search (shared.db.policies.profile_certificates) matches the serial number too.
-- Of the three, this index costs the most to keep: a serial is 40 random hex digits, about 40 trigrams
-- no other serial shares, where common names share most of theirs (an index of its own, so that it can be
-- weighed, or dropped, alone).
CREATE INDEX certificates_serial_trgm_idx ON certificates USING gin (serial_number gin_trgm_ops);
