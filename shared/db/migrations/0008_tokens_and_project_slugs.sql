-- Issue 9 (DESIGN.md 5.2): upstream's login answer and token renewal, and project slugs.

-- A token may be renewed, but never past the end its login allowed (the answer's accessTokenMaxTTL).
-- Tokens made before this migration end where they already ended.
ALTER TABLE access_tokens ADD COLUMN max_expires_at timestamptz;
UPDATE access_tokens SET max_expires_at = expires_at;
ALTER TABLE access_tokens
    ALTER COLUMN max_expires_at SET NOT NULL,
    ADD CONSTRAINT access_tokens_within_max CHECK (expires_at <= max_expires_at);

-- Every project has a unique slug (lowercase letters, digits, single hyphens), which the KMS agent's
-- v1 configs name it by. Existing projects get one from their name; a name whose slug is already
-- taken (or that has no letter or digit at all) gets the start of its id appended, which is unique.
ALTER TABLE projects ADD COLUMN slug text;
WITH base AS (
    SELECT id, created_at,
           coalesce(nullif(trim(BOTH '-' FROM left(trim(BOTH '-' FROM
               regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g')), 48)), ''), 'project') AS slug
    FROM projects
), ranked AS (
    SELECT id, slug, row_number() OVER (PARTITION BY slug ORDER BY created_at, id) AS n FROM base
)
UPDATE projects p
   SET slug = CASE WHEN r.n = 1 THEN r.slug ELSE r.slug || '-' || left(replace(p.id::text, '-', ''), 12) END
  FROM ranked r
 WHERE r.id = p.id;
ALTER TABLE projects
    ALTER COLUMN slug SET NOT NULL,
    ADD CONSTRAINT projects_slug_format CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(slug) <= 64),
    ADD CONSTRAINT projects_slug_key UNIQUE (slug);

-- A policy's validity.max now reads m as months of 30 days, upstream's meaning (DESIGN.md 5.1); it was
-- minutes. A maximum stored in minutes keeps its meaning, rewritten in seconds (still accepted there).
UPDATE certificate_policies
   SET rules = jsonb_set(rules, '{validity,max}',
                         to_jsonb((substring(rules->'validity'->>'max' FROM '^([0-9]+)m$')::bigint * 60) || 's'))
 WHERE rules->'validity'->>'max' ~ '^[0-9]{1,12}m$';
