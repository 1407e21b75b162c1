"""The ``OpenSIPS`` module as the python module builds it: one name, ``LM_ERR``."""

from __future__ import annotations

import sys
import types
from typing import Callable, List

_sinks: List[Callable[[str], None]] = []


def LM_ERR(text: str) -> None:  # noqa: N802 - the host's own name
    if not isinstance(text, str):
        raise TypeError("LM_ERR() argument must be str")
    for sink in _sinks[-1:]:
        sink(text)


def install(sink: Callable[[str], None]) -> None:
    """Make ``import OpenSIPS`` work, sending LM_ERR to ``sink`` (the newest fake host)."""
    _sinks.append(sink)
    module = types.ModuleType("OpenSIPS")
    module.LM_ERR = LM_ERR  # type: ignore[attr-defined]
    sys.modules["OpenSIPS"] = module
