"""ELMoForManyLangs' `Embedder` on the torch-free runtime: change the import, keep the code.

    # from elmoformanylangs import Embedder
    from elmo_runtime.compat.elmoformanylangs import Embedder

    e = Embedder("/path/to/zhs.model")           # or "manylangs-zh", or an exported package
    e.sents2elmo([["今", "天", "天氣", "真", "好", "阿"]])   # [(6, 1024) float32]

`model_dir` is an ELMoForManyLangs model folder (exported once into the cache when the
exporter is installed; see `elmo_runtime.compat.models`), a `manylangs-xx` name (the catalog's
package of that model, else exported once), or any package form `elmo_runtime.Elmo` opens.

`sents2elmo(sents, output_layer=-1)` returns one float32 array per sentence, in order: -1 the
average of the layers `(T, D)`, -2 all of them `(L + 1, T, D)`, 0..L one layer `(T, D)`, as the
original. Every sentence starts from a zero LSTM state: what a fresh original `Embedder` gives
for its first batch. The original carries the state from batch to batch (and shuffles the
order of its batches), so its later batches depend on the earlier ones; that is the one
intended difference. Sentences are lists of tokens (ELMoForManyLangs models were trained on
Universal Dependencies tokens: "Do remember tokenization!"); a bare str is refused.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from elmo_runtime import contract as C
from elmo_runtime.compat.models import model_package, token_lists
from elmo_runtime.embedder import Elmo

__all__ = ["Embedder"]

ALL_LAYERS, AVERAGE = -2, -1


class Embedder:
    """ELMoForManyLangs' `Embedder(model_dir, batch_size=64)`.

    Args:
        model_dir: an ELMoForManyLangs folder, a `manylangs-xx` name, or a package.
        batch_size: at most this many sentences per batch (memory only: the vectors do not
            depend on it).
        precision: the package precision to use for a name or a folder ("fp32").

    Raises:
        FileNotFoundError: no such folder.
        ValueError: an unknown name (the accepted forms named).
        RuntimeError: a folder that needs exporting without the exporter installed (the
            `elmo-export` command is named).
    """

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 64, *, precision: str = "fp32"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size is {batch_size!r}; expected a positive int")
        self.model_dir = model_dir
        self.batch_size = int(batch_size)
        self.elmo = Elmo(model_package(model_dir, precision=precision, state=C.ZERO))

    def sents2elmo(self, sents: list[list[str]], output_layer: int = AVERAGE) -> list[np.ndarray]:
        """Tokenized sentences -> one float32 array each (see the module docstring for `output_layer`).

        Raises:
            TypeError: a sentence that is not a list of str.
            ValueError: an `output_layer` other than -1, -2 or 0..L.
        """
        layers = self._layers(output_layer)
        sentences = token_lists(sents, "sents", "ELMoForManyLangs")
        return self.elmo.embed(sentences, layers=layers, state=C.ZERO, batch_size=self.batch_size)

    def _layers(self, output_layer: int) -> str | int:
        top = self.elmo.num_layers - 1
        if not isinstance(output_layer, bool) and isinstance(output_layer, numbers.Integral):
            if output_layer == AVERAGE:
                return "average"
            if output_layer == ALL_LAYERS:
                return "all"
            if 0 <= output_layer <= top:
                return int(output_layer)
        raise ValueError(
            f"output_layer is {output_layer!r}; choose -1 (the average of the layers), -2 (all "
            f"layers) or a layer 0..{top}"
        )
