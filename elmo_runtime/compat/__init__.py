"""Drop-in replacements for the ELMo APIs that older code calls: change one import.

    from elmo_runtime.compat.allennlp import ElmoEmbedder, Elmo, batch_to_ids   # allennlp 0.9 / 2.x
    from elmo_runtime.compat.elmoformanylangs import Embedder                   # ELMoForManyLangs
    from elmo_runtime.compat.simple_elmo import ElmoModel                       # simple_elmo (NLPL)
    import elmo_runtime.compat.flair   # then Flair's own ELMoEmbeddings runs without AllenNLP

Each shim takes what its original took (AllenNLP's options/weights files or URLs, an
ELMoForManyLangs folder, an NLPL ZIP) or any package form `elmo_runtime.Elmo` opens (a package
folder, a name, `hf:owner/repo`), and returns what its original returned: the same shapes,
dtypes and layer mixes. The one intended difference is the LSTM state: the originals carry it
from call to call (so a sentence's vectors depend on what ran before it); the shims start every
sentence from the package's fixed state, unless asked to be stateful (`stateful=True`), which
reproduces the original's carried state. See docs/migrate.md.

Nothing here imports torch, TensorFlow or the exporter: legacy model files that are not yet a
package are exported once by running `elmo-export` in a child process (`elmo_runtime.compat.models`).
"""
