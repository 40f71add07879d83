"""The `oci` domain worker: container-image functions (``execution_type: oci``).

Importing this package registers :data:`OCI_EXECUTOR` as the registry's executor for ``oci``
rows (``shared.registry.executors``), applies the worker's settings to it when the worker is
built (:func:`shared.functions.on_startup`) and closes it at shutdown
(:func:`shared.functions.on_shutdown`). The protocol functions code against is in docs/oci.md;
backends: ``workers/oci/local.py`` (subprocess) and ``workers/oci/kubernetes.py`` (Jobs).
"""

from __future__ import annotations

from shared.functions import on_shutdown, on_startup
from shared.registry.executors import register_executor
from workers.oci.executor import OciExecutor

__all__ = ["OCI_EXECUTOR"]

#: The process-wide executor (the worker's settings once it is built; the environment before).
OCI_EXECUTOR = OciExecutor()
register_executor("oci", OCI_EXECUTOR)
on_startup(OCI_EXECUTOR.configure)
on_shutdown(OCI_EXECUTOR.close)
