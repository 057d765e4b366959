-- Issue 11: the totalCount of a project's request list and of a profile's certificate list, without counting
-- every row on every page (with a million stored, count(*) took 230 ms for the requests and seconds for a
-- profile's certificates). Running counts per project (requests) and per profile (certificates), split over
-- 64 slots: each database connection adds to the slot of its backend process, so concurrent inserts of one
-- project rarely wait for each other's row lock, and one transaction only ever holds one slot of a key (no
-- deadlock between two of them). The total is the sum of the slots.
-- Requests are counted by a statement-level trigger with a transition table (a batch's COPY of 10,000
-- items is one update of one slot); certificates once per signing transaction, by the statement that
-- counts what it stored (shared.db.requests.store_many, store_issued): a trigger per stored certificate
-- cost a batch of 10,000 about 15 % of its rate. Neither table's rows are ever deleted (a certificate's
-- DELETE only hides it); recount_lists() below counts from scratch after anything that bypassed this.
CREATE TABLE request_counts (
    project_id  uuid NOT NULL,
    slot        smallint NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (project_id, slot)
);
CREATE TABLE profile_certificate_counts (
    profile_id  uuid NOT NULL,
    slot        smallint NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (profile_id, slot)
);

CREATE FUNCTION count_inserted_requests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO request_counts AS c (project_id, slot, n)
    SELECT project_id, pg_backend_pid() % 64, count(*) FROM inserted GROUP BY project_id
    ON CONFLICT (project_id, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER certificate_requests_counted_in AFTER INSERT ON certificate_requests
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_requests();

-- Counts what is stored from scratch: here, for the rows stored before this migration (migrations run
-- under an advisory lock, before the service starts), and after a load that bypassed the triggers (a
-- restore with --disable-triggers, the benchmarks' bulk loads).
CREATE FUNCTION recount_lists() RETURNS void LANGUAGE sql AS $$
    DELETE FROM request_counts;
    INSERT INTO request_counts (project_id, slot, n)
    SELECT project_id, 0, count(*) FROM certificate_requests GROUP BY project_id;
    DELETE FROM profile_certificate_counts;
    INSERT INTO profile_certificate_counts (profile_id, slot, n)
    SELECT profile_id, 0, count(*) FROM certificates GROUP BY profile_id;
$$;
SELECT recount_lists();

-- A profile's certificates page is ordered (created_at DESC, id): the index now ends with id, so a page
-- is read from the index in order instead of sorting every certificate of the profile.
CREATE INDEX certificates_profile_page_idx ON certificates (profile_id, created_at DESC, id);
DROP INDEX certificates_profile_idx;
