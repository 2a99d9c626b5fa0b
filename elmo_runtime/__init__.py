"""Torch-free ELMo embeddings from an exported ONNX model package.

from elmo_runtime import Elmo
vectors = Elmo("path/to/package").embed(["The cat sat.", "Hi!"])
"""

from __future__ import annotations

__all__ = ["Elmo", "ElmoStream", "PackageError"]


def __getattr__(name: str):
    # Imported on first use: `elmo_runtime.contract` alone (what the exporter's command line
    # reads) must not load onnxruntime.
    if name in ("Elmo", "ElmoStream"):
        from elmo_runtime import embedder

        return getattr(embedder, name)
    if name == "PackageError":
        from elmo_runtime.package import PackageError

        return PackageError
    raise AttributeError(f"module 'elmo_runtime' has no attribute {name!r}")
