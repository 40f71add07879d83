"""The `dev-tools` domain worker's functions. Importing this package registers its built-ins."""

from workers.dev_tools import blob, clerk, github, linear, stripe, webflow

__all__ = ["blob", "clerk", "github", "linear", "stripe", "webflow"]
