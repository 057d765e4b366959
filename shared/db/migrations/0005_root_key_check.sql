-- A check value of the root key (an HMAC under it, never the key): a process started with another root
-- key refuses to run instead of wrapping new data keys that the rest of the service cannot unwrap.
CREATE TABLE root_key_check (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    check_value  bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
