"""The PyTorch reference biLM, the model sources, and the ONNX exporter.

    from elmo_export import export, Int8Settings
    export("small", "elmo-small-int8", precision="int8")          # an official model, by name
    export("path/to/model", "out", precision=Int8Settings(per_channel=False))
    export(None, "out", options="options.json", weights="weights.hdf5")

The names below are imported on first use: `import elmo_export` (as `elmo-export --help` does)
stays light, without torch or onnx.
"""

from __future__ import annotations

from elmo_export.lazy import lazy_attributes

_PUBLIC = {
    "elmo_export.exporter": ("export", "export_package", "export_reference"),
    "elmo_export.settings": ("ExportSettings",),
    "elmo_export.quantize.settings": ("Fp32Settings", "Fp16Settings", "Int8Settings", "Int4Settings"),
    "elmo_export.parity": ("ParityError",),
    "elmo_export.sources.base": ("Loader", "ModelSourceError"),
    "elmo_export.sources.lookup": ("resolve",),
}

__all__ = sorted(name for names in _PUBLIC.values() for name in names)

__getattr__ = lazy_attributes(__name__, _PUBLIC)
