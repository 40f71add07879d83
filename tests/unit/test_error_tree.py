"""Every exception class the project defines is in the one tree of shared/errors.py: a failure
under ``FleetError`` or a control signal under ``ControlSignal``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import shared
import workers
from shared.errors import ControlSignal, FleetError


def _modules() -> list[str]:
    names = []
    for package in (shared, workers):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            names.append(info.name)
    return names


def test_every_exception_class_is_in_the_tree() -> None:
    outside = []
    seen = 0
    for name in _modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            seen += 1
            if not issubclass(cls, FleetError | ControlSignal):
                outside.append(f"{name}.{cls.__qualname__}")
    assert seen > 20  # the walk really found the project's exceptions
    assert outside == []
