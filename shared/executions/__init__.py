"""Execution history and exactly-once effect: the coalescing batch writer, the claim
middleware, the result recorder and retention. See docs/registry.md."""
