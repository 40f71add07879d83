"""The PostgreSQL function registry: schema and migrations, the ``functions`` table, built-in
sync, the cached resolver with NOTIFY invalidation, and the executor registry for oci/http
functions. See docs/registry.md."""
