"""Operator tooling: the `fleet` CLI, the benchmark and profiler, the manifest renderer, record /
replay / dead letters, and the embedded Valkey and PostgreSQL. Nothing on a worker's hot path
imports this package (tests/unit/test_import_rules.py)."""
