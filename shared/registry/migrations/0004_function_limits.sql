-- 0004: fleet-wide limits of a function besides max_concurrency (shared/limits.py):
-- concurrency_key, a template over the input ("{{input.channel}}": max_concurrency holds per
-- value), and rate_limit ({"limit": N, "period_seconds": P[, "burst": B]}).

ALTER TABLE functions
    ADD COLUMN concurrency_key text
        CHECK (concurrency_key IS NULL OR concurrency_key LIKE '%{{%}}%'),
    ADD COLUMN rate_limit jsonb
        CHECK (rate_limit IS NULL OR jsonb_typeof(rate_limit) = 'object');
