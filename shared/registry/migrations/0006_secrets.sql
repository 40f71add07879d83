-- 0006: the fleet's secret store (`fleet secrets`, docs/registry.md "Credentials and secrets").
--
-- The last place a worker looks for a function's credential (after the Dapr secret store, the
-- secrets file and FLEET_SECRET_<KEY>). `token` is a Fernet token (FLEET_SECRETS_KEY) of the
-- name and value together: the database never holds a value in the clear, and a token copied
-- onto another row does not decrypt as that secret. Names follow the credential keys a
-- function may declare (shared/registry/models.py).
CREATE TABLE fleet_secrets (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(name) <= 200),
    token       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);
