"""simple_elmo's `ElmoModel` on the torch- and TensorFlow-free runtime: change the import.

    # from simple_elmo import ElmoModel
    from elmo_runtime.compat.simple_elmo import ElmoModel

    model = ElmoModel()
    model.load("209.zip")                          # an NLPL ZIP or folder, a norelmo-* name, a package
    model.get_elmo_vectors(SENTENCES)              # (N, longest, D) float64
    model.get_elmo_vector_average(SENTENCES)       # (N, D) float64, each row of unit length

What is the same as simple_elmo: the arguments and defaults, float64 arrays shaped
`(N, longest sentence, D)` (`(N, L + 1, longest, D)` for layers="all"), the layer choices
"average" (the plain mean of the layers, as its untrained scalar mix is), "top" and "all", and
the sentence vector: the mean over the sentence's positions, divided by its L2 norm.

Differences, each toward what simple_elmo documents rather than what its code does by accident:

* State (the intended one): simple_elmo opens a TensorFlow session per call (zero state),
  runs the first batch once to warm up, then carries the state from batch to batch, so a
  sentence's vectors depend on the other texts of the call and on `max_batch_size`. Here every
  sentence starts from the package's fixed state, and `warmup` has nothing to do.
  `ElmoModel(stateful=True)` reproduces simple_elmo's procedure (zero state, warm-up on the
  first batch, state carried row by row through the batches in order).
* Positions past a sentence's end are zeros (simple_elmo leaves the token layer of its batch's
  padding there with layers="average"/"all"), and the sentence mean is over its own tokens (so
  with layers="top" it equals simple_elmo's; with "average" simple_elmo also averages in that
  padding). For layers="all" the sentence vectors are `(N, L + 1, D)`, each sentence's block
  divided by its norm (simple_elmo's reshape there mixes the layers up).
* `session` and `limit` are accepted and not used (no TensorFlow, no vocabulary cache needed);
  `full=True` (the LM head for `get_elmo_substitutes`) is refused: packages hold no LM head.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from elmo_runtime import contract as C
from elmo_runtime.compat.models import model_package, token_lists
from elmo_runtime.embedder import Elmo

log = logging.getLogger(__name__)

__all__ = ["ElmoModel"]

LAYERS = ("average", "top", "all")


class ElmoModel:
    """simple_elmo's `ElmoModel`: `load`, then `get_elmo_vectors` / `get_elmo_vector_average`.

    Args:
        stateful: reproduce simple_elmo's carried state (see the module docstring); default
            False: every sentence starts from the package's fixed state.
    """

    def __init__(self, *, stateful: bool = False):
        self.stateful = bool(stateful)
        self.elmo: Elmo | None = None
        self.batch_size: int | None = None
        self.max_chars: int | None = None
        self.vector_size: int | None = None
        self.n_layers: int | None = None

    def load(
        self,
        directory: str | os.PathLike,
        max_batch_size: int = 32,
        limit: int = 100,
        full: bool = False,
        *,
        precision: str = "fp32",
    ) -> str:
        """Load a model: an NLPL ZIP or folder (exported once into the cache when the exporter is
        installed), a `norelmo-*` name, or any package form `elmo_runtime.Elmo` opens.

        Raises:
            NotImplementedError: `full=True`.
            FileNotFoundError, ValueError, RuntimeError: see `elmo_runtime.compat.models`.
        """
        if full:
            raise NotImplementedError(
                "full=True loads the language-model head for get_elmo_substitutes; elmo-onnx "
                "packages hold the biLM only"
            )
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size is {max_batch_size!r}; expected a positive int")
        self.elmo = Elmo(model_package(directory, precision=precision, state=C.ZERO if self.stateful else C.WARM))
        self.batch_size = max_batch_size
        self.max_chars = self.elmo.manifest.chars.get("max_characters_per_token", C.MAX_CHARACTERS_PER_TOKEN)
        self.vector_size = self.elmo.dim
        self.n_layers = self.elmo.num_layers
        return "The model is now loaded."

    def get_elmo_vectors(
        self, texts: list[list[str]], warmup: bool = True, layers: str = "average", session: object = None
    ) -> np.ndarray:
        """Tokenized texts -> float64 `(N, longest, D)` (`(N, L + 1, longest, D)` for "all"),
        zeros past each text's end."""
        vectors = self._embed(texts, warmup, layers, session)
        longest = max((v.shape[-2] for v in vectors), default=0)
        shape = (
            (len(vectors), self.n_layers, longest, self.vector_size)
            if layers == "all"
            else (len(vectors), longest, self.vector_size)
        )
        out = np.zeros(shape)
        for i, v in enumerate(vectors):
            out[i, ..., : v.shape[-2], :] = v
        return out

    def get_elmo_vector_average(
        self, texts: list[list[str]], warmup: bool = True, layers: str = "average", session: object = None
    ) -> np.ndarray:
        """Tokenized texts -> float64 `(N, D)` (`(N, L + 1, D)` for "all"): each text's mean
        vector divided by its L2 norm (zeros for a text with no tokens)."""
        vectors = self._embed(texts, warmup, layers, session)
        shape = (len(vectors), self.n_layers, self.vector_size) if layers == "all" else (len(vectors), self.vector_size)
        out = np.zeros(shape)
        for i, v in enumerate(vectors):
            if v.shape[-2]:
                mean = v.astype(np.float64).mean(axis=-2)
                out[i] = mean / np.linalg.norm(mean)
        return out

    def _embed(self, texts, warmup: bool, layers: str, session) -> list[np.ndarray]:
        if self.elmo is None:
            raise RuntimeError("no model is loaded: call load(directory) first")
        if layers not in LAYERS:
            raise ValueError(f"layers is {layers!r}; choose one of {', '.join(LAYERS)}")
        if session is not None:
            log.info("session is not used: elmo_runtime runs without TensorFlow")
        sentences = token_lists(texts, "texts", "simple_elmo")
        if not self.stateful:
            return self.elmo.embed(sentences, layers=layers, batch_size=self.batch_size)
        # simple_elmo: a new session (zero state), the first batch run once, then every batch in order.
        stream = self.elmo.stream(state=C.ZERO)
        batches = [sentences[i : i + self.batch_size] for i in range(0, len(sentences), self.batch_size)]
        if warmup and batches:
            stream.embed(batches[0], layers=layers)
        return [v for batch in batches for v in stream.embed(batch, layers=layers)]
