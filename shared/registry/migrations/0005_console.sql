-- 0005: what the web console (shared/tools/console) reads.
--
-- Versions: the registry kept only a function's current definition and its version number, so
-- earlier versions could not be shown or compared. A trigger now keeps one snapshot per
-- (function, version): written when a row is inserted or its definition changes (a built-in
-- sync may change a description without a new version: the snapshot of that version follows).
-- The operator's flags (enabled, deprecated) and bookkeeping columns are not part of it.
CREATE TABLE function_versions (
    function_id uuid NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, version)
);

CREATE FUNCTION functions_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO function_versions AS v (function_id, version, definition)
    VALUES (NEW.id, NEW.version, to_jsonb(NEW) - ARRAY['id', 'version', 'is_enabled', 'is_deprecated',
                                                      'created_at', 'updated_at', 'created_by'])
    ON CONFLICT (function_id, version) DO UPDATE SET definition = EXCLUDED.definition, created_at = now()
        WHERE v.definition IS DISTINCT FROM EXCLUDED.definition;
    RETURN NEW;
END $$;
CREATE TRIGGER functions_keep_version AFTER INSERT OR UPDATE ON functions
    FOR EACH ROW EXECUTE FUNCTION functions_keep_version();

INSERT INTO function_versions (function_id, version, definition)
SELECT f.id, f.version, to_jsonb(f) - ARRAY['id', 'version', 'is_enabled', 'is_deprecated', 'created_at',
                                           'updated_at', 'created_by']
FROM functions f;

-- Keyset pagination of the history (newest first, ties broken by id) reads this index
-- backwards; it replaces the created_at-only one (retention's range delete uses it as well).
-- Both columns never change after the claim, so finishing an execution stays a HOT update.
DROP INDEX IF EXISTS function_executions_created_idx;
CREATE INDEX function_executions_created_id_idx ON function_executions (created_at, id);
