"""Torch-free ELMo embeddings from an exported ONNX model package.

    from elmo_runtime import Elmo
    vectors = Elmo("path/to/package").embed(["The cat sat.", "Hi!"])
"""

from elmo_runtime.embedder import Elmo, ElmoStream
from elmo_runtime.package import PackageError

__all__ = ["Elmo", "ElmoStream", "PackageError"]
