-- CA private keys out of the front end's reach (DESIGN.md 4.4): a second root key, the CA root key, given
-- to workers only, wraps a second data key per project, and only those seal CA keys. `purpose` names the
-- root key a row belongs to: 'root' (KMS_ROOT_KEY, every row so far) or 'ca-root' (KMS_CA_ROOT_KEY).
-- The defaults keep code of the previous release writing what it always wrote.

ALTER TABLE project_data_keys
    ADD COLUMN purpose text NOT NULL DEFAULT 'root' CHECK (purpose IN ('root', 'ca-root'));
ALTER TABLE project_data_keys DROP CONSTRAINT project_data_keys_pkey;
ALTER TABLE project_data_keys ADD PRIMARY KEY (project_id, purpose);

-- One check value per root key (was: one row in all).
ALTER TABLE root_key_check
    ADD COLUMN purpose text NOT NULL DEFAULT 'root' CHECK (purpose IN ('root', 'ca-root'));
ALTER TABLE root_key_check DROP CONSTRAINT root_key_check_pkey;
ALTER TABLE root_key_check DROP COLUMN singleton;
ALTER TABLE root_key_check ADD PRIMARY KEY (purpose);

-- Which root key's data key seals a CA's key: 'root' for keys sealed before this migration, until a worker
-- (at start-up) or `kms-pki migrate` given the CA root key re-seals them (worker/key_migration.py);
-- 'ca-root' for every key a worker seals from now on.
ALTER TABLE certificate_authorities
    ADD COLUMN key_sealed_by text NOT NULL DEFAULT 'root' CHECK (key_sealed_by IN ('root', 'ca-root'));
CREATE INDEX certificate_authorities_sealed_by_root_idx ON certificate_authorities (id)
    WHERE key_sealed_by = 'root' AND encrypted_private_key IS NOT NULL;
