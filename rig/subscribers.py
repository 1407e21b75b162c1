"""opensips/subscribers.py (a command, not a package module) loaded for the rig."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "opensips" / "subscribers.py"
    spec = importlib.util.spec_from_file_location("gateway_subscribers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


subscribers = _load()
