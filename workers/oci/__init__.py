"""The `oci` domain worker: container-image functions (``execution_type: oci``).

Importing this package registers :data:`OCI_EXECUTOR` as the registry's executor for ``oci``
rows (``shared.registry.executors``). The protocol functions code against is in docs/oci.md;
backends: ``workers/oci/local.py`` (subprocess) and ``workers/oci/kubernetes.py`` (Jobs).
"""

from __future__ import annotations

from workers.oci.executor import OciExecutor

__all__ = ["OCI_EXECUTOR"]

#: The process-wide executor (settings read from the environment on first use).
OCI_EXECUTOR = OciExecutor()

try:
    from shared.registry.executors import register_executor
except ImportError:  # a tree without the registry: nothing dispatches to executors yet
    pass
else:
    register_executor("oci", OCI_EXECUTOR)
