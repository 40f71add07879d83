-- 0001: the function registry and the execution history (with idempotency claims).

CREATE TABLE functions (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                    text NOT NULL,
    slug                    text NOT NULL UNIQUE CHECK (slug ~ '^[^/\s]+/[^\s]+$'),
    description             text NOT NULL DEFAULT '',
    plugin_id               text NOT NULL,
    version                 integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    domain                  text,                       -- NULL: every domain (diagnostics)
    execution_type          text NOT NULL CHECK (execution_type IN ('builtin', 'oci', 'http')),
    image_ref               text,
    command                 jsonb,                      -- ["python", "main.py"]
    working_dir             text,
    container_env           jsonb,                      -- {"NAME": "value"}
    webhook_url             text,
    webhook_method          text,
    webhook_headers         jsonb,
    webhook_timeout_seconds double precision,
    input_schema            jsonb,
    output_schema           jsonb,
    timeout_seconds         double precision CHECK (timeout_seconds > 0),
    retry_policy            jsonb,
    max_concurrency         integer CHECK (max_concurrency > 0),
    credentials             text[] NOT NULL DEFAULT '{}',
    tags                    text[] NOT NULL DEFAULT '{}',
    is_builtin              boolean NOT NULL DEFAULT false,
    is_enabled              boolean NOT NULL DEFAULT true,
    is_deprecated           boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    created_by              text,
    CHECK (execution_type <> 'oci' OR image_ref IS NOT NULL),
    CHECK (execution_type <> 'http' OR webhook_url IS NOT NULL)
);
CREATE INDEX functions_domain_idx ON functions (domain);

-- Every change to a function reaches running workers' caches (shared/registry/resolver.py).
CREATE FUNCTION functions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('fleet_functions', OLD.slug);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.slug <> NEW.slug THEN
        PERFORM pg_notify('fleet_functions', OLD.slug);
    END IF;
    PERFORM pg_notify('fleet_functions', NEW.slug);
    RETURN NEW;
END $$;
CREATE TRIGGER functions_notify AFTER INSERT OR UPDATE OR DELETE ON functions
    FOR EACH ROW EXECUTE FUNCTION functions_notify();

CREATE TABLE function_executions (
    id                    text PRIMARY KEY,           -- the request's CloudEvent id
    function_id           uuid REFERENCES functions (id) ON DELETE SET NULL,
    function_slug         text NOT NULL DEFAULT '',
    workflow_execution_id text,
    node_id               text,
    status                text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    input                 jsonb,
    output                jsonb,
    error                 jsonb,
    result                jsonb,                      -- the whole result data, republished verbatim
    attempt               integer NOT NULL DEFAULT 1,
    started_at            timestamptz,
    completed_at          timestamptz,
    duration_ms           double precision,
    worker                text,
    lease_owner           text,                       -- "<worker name>/<process token>"
    lease_token           text,                       -- one per claim
    lease_expires_at      timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX function_executions_function_idx ON function_executions (function_slug, created_at DESC);
CREATE INDEX function_executions_status_idx ON function_executions (status, created_at DESC);
CREATE INDEX function_executions_created_idx ON function_executions (created_at);
CREATE INDEX function_executions_workflow_idx ON function_executions (workflow_execution_id)
    WHERE workflow_execution_id IS NOT NULL;
