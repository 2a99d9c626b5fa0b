"""The PyTorch reference biLM, the model sources, and the ONNX exporter.

    from elmo_export import export, Int8Settings
    export("small", "elmo-small-int8", precision="int8")          # an official model, by name
    export("path/to/model", "out", precision=Int8Settings(per_channel=False))
    export(None, "out", options="options.json", weights="weights.hdf5")

The names below are imported on first use: `import elmo_export` (as `elmo-export --help` does)
stays light, without torch or onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "export": "elmo_export.exporter",
    "export_package": "elmo_export.exporter",
    "export_reference": "elmo_export.exporter",
    "ExportSettings": "elmo_export.settings",
    "Fp32Settings": "elmo_export.quantize.settings",
    "Fp16Settings": "elmo_export.quantize.settings",
    "Int8Settings": "elmo_export.quantize.settings",
    "Int4Settings": "elmo_export.quantize.settings",
    "ParityError": "elmo_export.parity",
    "Loader": "elmo_export.sources.base",
    "ModelSourceError": "elmo_export.sources.base",
    "resolve": "elmo_export.sources.lookup",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'elmo_export' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
