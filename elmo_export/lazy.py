"""Names a package exports but imports only on first use, so that importing the package stays light."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, exported: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports each name of `exported`
    (`{module: names}`) from its module when it is first used."""
    homes = {name: module for module, names in exported.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
