"""Enforcement of the fleet-wide limits declared in ``shared/limits.py``: the Redis side
(:mod:`shared.limiter.store`) and the worker's extension and middleware
(:mod:`shared.limiter.extension`). Outside ``shared/runtime`` because it needs Redis itself,
which the runtime never does (it only knows the transport interface)."""
