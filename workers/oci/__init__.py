"""The `oci` domain worker: container-image functions (``execution_type: oci``).

Each worker built for this domain gets its own :class:`~workers.oci.extension.OciExtension`
(:func:`extensions`), whose executor runs the registry's ``oci`` rows with that worker's
settings; importing the package registers nothing. The protocol functions code against is in
docs/oci.md; backends: ``workers/oci/local.py`` (subprocess) and ``workers/oci/kubernetes.py``
(Jobs). `fleet new` and `fleet build` are in ``workers/oci/cli.py``.
"""

from __future__ import annotations

from shared.runtime.extension import Extension
from shared.settings import Settings
from workers.oci.extension import OciExtension

__all__ = ["extensions"]


def extensions(settings: Settings) -> list[Extension]:
    """The extensions of one `oci` worker (``shared.assemble.create_worker`` calls this).

    Raises:
        ConfigError: ``settings`` cannot run OCI functions (a blank ``FLEET_OCI_NAMESPACE`` with
            the Kubernetes backend).
    """
    return [OciExtension(settings)]
