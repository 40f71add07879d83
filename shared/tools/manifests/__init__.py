"""The fleet's deployment files, rendered from the one declaration of the domains.

``render()`` builds every file of ``components/`` (Dapr), ``deploy/`` (Kustomize base and
overlays, PodMonitors, Argo CD Applications, Kargo pipeline), ``keda/`` and the ``Dockerfile``
as Python values from
:data:`shared.domains.DOMAINS` and the :class:`~shared.settings.Settings` defaults;
``write_tree`` / ``check_tree`` write them or report drift. `fleet manifests render` is the
command (shared/tools/cli/manifests.py); docs/deploy.md explains the values.
"""

from shared.tools.manifests.files import MANAGED_DIRS, Drift, check_tree, serialize, serialize_all, write_tree
from shared.tools.manifests.render import (
    HEADER,
    Document,
    Platform,
    RenderedFile,
    configmap_data,
    default_settings,
    render,
)

__all__ = [
    "HEADER",
    "MANAGED_DIRS",
    "Document",
    "Drift",
    "Platform",
    "RenderedFile",
    "check_tree",
    "configmap_data",
    "default_settings",
    "render",
    "serialize",
    "serialize_all",
    "write_tree",
]
