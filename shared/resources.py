"""Per-worker resources: the objects extensions provide and handlers use, keyed by class.

A handler reaches what its worker was assembled with through ``ctx.resources``::

    clients = ctx.resources.get(ProviderClients)

Each worker has its own :class:`Resources`; nothing in it is shared between workers.
"""

from __future__ import annotations

from typing import Any, TypeVar

from shared.errors import ConfigError

__all__ = ["Resources", "resource_key"]

T = TypeVar("T")


def resource_key(kind: type[Any]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class Resources:
    """Per-worker objects by type: what extensions provide and handlers use.

    ``ctx.resources.get(ProviderClients)`` in a handler; ``provide`` from an extension's
    constructor or :meth:`Extension.start`. Keys are the classes themselves, so a lookup is as
    typed as the object stored.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[type[Any], Any] = {}

    def provide(self, kind: type[T], value: T) -> None:
        """Store ``value`` under ``kind``; providing a kind twice is a wiring bug."""
        if kind in self._items and self._items[kind] is not value:
            raise ConfigError(f"two extensions provide {resource_key(kind)}")
        self._items[kind] = value

    def get(self, kind: type[T]) -> T:
        """The object provided under ``kind``; :class:`ConfigError` naming it when none was."""
        try:
            value: T = self._items[kind]
        except KeyError:
            raise ConfigError(f"this worker has no {resource_key(kind)} (an extension is missing)") from None
        return value

    def find(self, kind: type[T]) -> T | None:
        """Like :meth:`get`, ``None`` when nothing was provided."""
        value: T | None = self._items.get(kind)
        return value

    def __contains__(self, kind: object) -> bool:
        return kind in self._items
