-- 0002: per-function container resources for OCI functions
-- ({"requests": {"cpu", "memory"}, "limits": {"cpu", "memory"}}, any part optional; NULL = the
-- FLEET_OCI_* defaults).

ALTER TABLE functions
    ADD COLUMN resources jsonb
        CHECK (resources IS NULL OR jsonb_typeof(resources) = 'object');
