"""Flair's own `ELMoEmbeddings`, unmodified, on the torch-free runtime instead of AllenNLP.

    import elmo_runtime.compat.flair            # before Flair builds the embeddings
    from flair.embeddings import ELMoEmbeddings
    embedding = ELMoEmbeddings("original")      # "small", "medium", "original", "5.5B"/"large"

Flair's class imports `allennlp.commands.elmo`, reads its `DEFAULT_OPTIONS_FILE` and
`DEFAULT_WEIGHT_FILE`, and builds `ElmoEmbedder(options_file, weight_file, cuda_device)`, whose
`embed_batch` it calls (AllenNLP 0.9.0, which no current Python installs). Importing this
module registers `elmo_runtime.compat.allennlp` under those module names, only when a real
AllenNLP is not importable, so Flair's code runs as it is: the same `embedding_length` (3072
for "all" with `original`, 1024 for "top" and "average"), the same `name`
(`elmo-<model>-<mode>`), the same layer concatenation or mean per token. Flair's models that
hold the embeddings pickle and load (the embedder re-opens its package).

Flair's `model` names resolve as AllenNLP's URLs do: `small`, `medium`, `original`, and
`5.5B`/`large` (original-5.5b); its contributed `pt` and `pubmed` models are not in the catalog
(their URLs are refused, naming the known ones). Flair's `options_file`/`weight_file` take
local files or any package form (`elmo_runtime.compat.models`).

Flair passes `cuda_device` from `flair.device`: on a machine where torch sees a GPU that is 0,
which needs onnxruntime-gpu (the error says how to install it); set `flair.device =
torch.device("cpu")` first to run on the CPU instead.

`ELMoEmbeddings` is also importable from here (Flair's class, after the registration).
"""

from __future__ import annotations

import importlib.util
import sys
import types

from elmo_runtime.compat import allennlp as _allennlp

# The module names Flair's ELMoEmbeddings (and AllenNLP 0.9 user code) import.
ALIASES = ("allennlp", "allennlp.commands", "allennlp.commands.elmo")


def install() -> bool:
    """Register the shim as `allennlp.commands.elmo` unless a real AllenNLP is importable.

    Returns:
        True if the shim is (now) what `import allennlp.commands.elmo` gives.
    """
    if sys.modules.get("allennlp.commands.elmo") is _allennlp:
        return True
    if importlib.util.find_spec("allennlp") is not None:
        return False  # the real one: leave it
    package = types.ModuleType("allennlp", "elmo_runtime.compat's stand-in for AllenNLP's ELMo API (not AllenNLP)")
    package.__path__ = []  # a package, so that its submodules import
    commands = types.ModuleType("allennlp.commands", package.__doc__)
    commands.__path__ = []
    package.commands, commands.elmo = commands, _allennlp
    sys.modules.update({"allennlp": package, "allennlp.commands": commands, "allennlp.commands.elmo": _allennlp})
    return True


install()


def __getattr__(name: str):
    # Flair (and torch) load only when its class is asked for.
    if name == "ELMoEmbeddings":
        from flair.embeddings import ELMoEmbeddings

        return ELMoEmbeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
