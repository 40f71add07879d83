"""The `comms` domain worker's functions. Importing this package registers its built-ins."""

from workers.comms import resend, slack

__all__ = ["resend", "slack"]
