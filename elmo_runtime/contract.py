"""The model package contract: file names, the graphs' interface (`graph_specs`), state modes,
precision names, opsets and char-id constants.

The exporter writes packages by this contract and the runtime reads them by it; a client in
another language finds the same facts in the package's `elmo.json`, described for
implementers in `docs/package-format.md`. Change it only together with that document and, when
a reader of the current version would misread the change, `FORMAT_VERSION` (the document's
evolution rule).

A package runs as two graphs, char ids -> token embeddings -> biLM layers, so that the runtime
can cache token embeddings (the char CNN's output) between calls; their weights are disjoint.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2: the char scheme is named (`chars.scheme`) with its parameters under it, literal boundary
# tokens are listed, a zero-state package stores its zeros, the sentence rules and the
# conformance vectors are declared. Version 1 readers would ignore `chars.scheme`. Other token
# schemes (`elmo_runtime.token_schemes`: ELMoForManyLangs' dictionaries and word ids) and a
# bytes width other than 50 are additions within format 2: readers refuse what they do not
# implement, by name.
# 3: `sentence_edges` is a plain, required bilm input (in 2 an initializer-backed default that
# onnxruntime-node and -web silently ignored when fed), and only main-graph initializers are
# stored as external data (in 2 the Scan bodies' weights were too, which onnxruntime-web and
# in-memory loading cannot read). A version 2 reader would run a version 3 bilm without its
# required input; this runtime refuses version 2, saying to export again (the graphs of 2
# cannot be loaded from verified bytes: `runner.create_session`).
FORMAT_VERSION = 3
MANIFEST_FILE = "elmo.json"
TOKEN_EMBEDDER_FILE = "token_embedder.onnx"
BILM_FILE = "bilm.onnx"
CONFORMANCE_FILE = "conformance.json"

# The source model, in the official layout: what `elmo-export` reads.
OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"

# The state every row starts from: the package's warm state (the reference's state after a
# built-in warm-up text) or zeros.
WARM, ZERO = "warm", "zero"
STATE_MODES = (WARM, ZERO)

# Precisions of a package. "none" (no quantization) is accepted for fp32 as an alias only.
PRECISIONS = ("fp32", "fp16", "int8", "int4")
PRECISION_ALIASES = {"none": "fp32"}

# Opsets the exporter writes (Scan, Reduce* with axes as an input from 18, ...).
DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(17, 22)

# Graph tensor names. Dimension names are the symbolic (dynamic) axes.
BATCH, TOKENS = "batch", "tokens"
CHAR_IDS = "char_ids"  # int32 [batch, tokens, max_characters_per_token]
WORD_IDS = "word_ids"  # int32 [batch, tokens]; only where the model has a word table (ELMoForManyLangs)
TOKEN_EMBEDDINGS = "token_embeddings"  # float32 [batch, tokens, projection_dim]
MASK = "mask"  # int32 [batch, tokens]; 1 for real tokens, a prefix of each row
INITIAL_H = "initial_h"  # float32 [n_layers, 2, batch, projection_dim]; direction 0 forward
INITIAL_C = "initial_c"  # float32 [n_layers, 2, batch, dim]
LAYERS = "layers"  # float32 [n_layers + 1, batch, tokens, 2 * projection_dim]
FINAL_H = "final_h"  # like INITIAL_H: each row's state after its own last real token
FINAL_C = "final_c"  # like INITIAL_C

# A bilm input, int64 [edge_rows, 2] with edge_rows 1 or batch: per row, 1 where the graph adds
# <S> before the row / </S> after it. [[1, 1]] runs whole sentences. Zeros let a long sentence
# run in time chunks with the state carried between calls (the runtime does so beyond its batch
# budget). A plain input with no default (format 3): every binding sees it and must feed it.
SENTENCE_EDGES = "sentence_edges"
WHOLE_SENTENCES = ((1, 1),)

# How the graphs compute sigmoid and tanh: the manifest's `precision.activation_functions`.
# "onnxruntime": its Sigmoid and Tanh kernels, whose last bits differ between builds (x86's fuse
# multiply-adds, wasm's do not); "exact": written out in exactly rounded float32 ops, the same
# bits in every build (`elmo-export --exact-activations`). Absent (every package before the
# field, and exports without the flag): "onnxruntime".
ONNXRUNTIME_ACTIVATIONS = "onnxruntime"
EXACT_ACTIVATIONS = "exact"
ACTIVATION_FUNCTIONS = (ONNXRUNTIME_ACTIVATIONS, EXACT_ACTIVATIONS)

PIPELINE = (
    "char_ids -> token_embedder -> (token_embeddings, mask) -> bilm with (initial_h, initial_c) "
    "-> (layers, final_h, final_c)"
)


def precision_name(name: str, what: str = "precision") -> str:
    """The canonical precision name for `name` ("none" -> "fp32"); `what` names it in errors.

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    canonical = PRECISION_ALIASES.get(name, name) if isinstance(name, str) else name
    if canonical not in PRECISIONS:
        raise ValueError(
            f"{what} is {name!r}; choose one of {', '.join(PRECISIONS)} "
            f"({', '.join(f'{a} = {c}' for a, c in PRECISION_ALIASES.items())})"
        )
    return canonical


def check_state_mode(mode: str, what: str = "state") -> str:
    """`mode` if it is a state mode. Raises ValueError naming the allowed ones."""
    if mode not in STATE_MODES:
        raise ValueError(f"{what} is {mode!r}; choose one of {', '.join(STATE_MODES)}")
    return mode


def check_opset(opset: int) -> int:
    """`opset` if the exporter writes it. Raises ValueError naming the supported range."""
    if type(opset) is not int or opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset is {opset!r}; choose {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    return opset


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, and shape (str: a symbolic axis)."""

    name: str
    dtype: str  # "int32", "int64" or "float32"
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the package: its file and its inputs and outputs, in order."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "inputs": {t.name: t.to_dict() for t in self.inputs},
            "outputs": {t.name: t.to_dict() for t in self.outputs},
        }


def graph_specs(
    n_layers: int, projection_dim: int, dim: int, max_characters_per_token: int | None = None, word_ids: bool = False
) -> dict[str, GraphSpec]:
    """The export spec: each graph's file, inputs and outputs, for one architecture.

    `max_characters_per_token`: the char-id width (None: 50); `word_ids`: the token embedder
    also takes word ids (a model with a word table).

    The one declaration of the graphs' interface: the graph builders derive their inputs and
    outputs from it, the exporter validates the saved graphs and writes it to the manifest,
    and the runtime checks every session against it when it loads a package.
    """
    p, d, n = projection_dim, dim, n_layers
    width = MAX_CHARACTERS_PER_TOKEN if max_characters_per_token is None else max_characters_per_token
    token_inputs = (TensorSpec(CHAR_IDS, "int32", (BATCH, TOKENS, width)),)
    if word_ids:
        token_inputs += (TensorSpec(WORD_IDS, "int32", (BATCH, TOKENS)),)
    embeddings = TensorSpec(TOKEN_EMBEDDINGS, "float32", (BATCH, TOKENS, p))
    mask = TensorSpec(MASK, "int32", (BATCH, TOKENS))
    h = (n, 2, BATCH, p)
    c = (n, 2, BATCH, d)
    return {
        "token_embedder": GraphSpec(TOKEN_EMBEDDER_FILE, token_inputs, (embeddings, mask)),
        "bilm": GraphSpec(
            BILM_FILE,
            (
                embeddings,
                mask,
                TensorSpec(INITIAL_H, "float32", h),
                TensorSpec(INITIAL_C, "float32", c),
                TensorSpec(SENTENCE_EDGES, "int64", ("edge_rows", 2)),
            ),
            (
                TensorSpec(LAYERS, "float32", (n + 1, BATCH, TOKENS, 2 * p)),
                TensorSpec(FINAL_H, "float32", h),
                TensorSpec(FINAL_C, "float32", c),
            ),
        ),
    }


# Character ids (AllenNLP's ELMoCharacterMapper, bilm-tf's UnicodeCharsVocabulary): a token is
# [begin-of-word, its UTF-8 bytes (at most 48), end-of-word, padding...], every id shifted by
# +1 so that 0 can mean "no token" (padding rows of a batch).
MAX_CHARACTERS_PER_TOKEN = 50
# The widest a model may make it (bilm-tf made it tunable): far above any published model.
MAX_CHARACTERS_PER_TOKEN_LIMIT = 1024
MAX_TOKEN_BYTES = MAX_CHARACTERS_PER_TOKEN - 2
BEGINNING_OF_SENTENCE_CHARACTER = 256
END_OF_SENTENCE_CHARACTER = 257
BEGINNING_OF_WORD_CHARACTER = 258
END_OF_WORD_CHARACTER = 259
PADDING_CHARACTER = 260
CHAR_ID_OFFSET = 1
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


CHAR_SCHEME = "bytes"
UNENCODABLE = "drop"  # what becomes of code points UTF-8 cannot encode (lone surrogates)


def char_constants(max_characters_per_token: int = MAX_CHARACTERS_PER_TOKEN) -> dict:
    """The char-id scheme as plain data, for the manifest's `chars` entry.

    The scheme is named, its parameters under its name, so that another scheme (code points
    through a char dictionary: `token_schemes.DictionaryScheme`) is an addition rather than a
    format break: a reader refuses a scheme it does not implement. `max_characters_per_token`:
    the model's width (bilm-tf made it tunable; NLPL models may differ from 50), tokens cut to
    that less 2 bytes.
    """
    return {
        "scheme": CHAR_SCHEME,
        "max_characters_per_token": max_characters_per_token,
        "id_offset": CHAR_ID_OFFSET,
        "padding_row_id": 0,
        CHAR_SCHEME: {
            "encoding": "utf-8",
            "unencodable": UNENCODABLE,
            "max_token_bytes": max_characters_per_token - 2,
            "beginning_of_word": BEGINNING_OF_WORD_CHARACTER,
            "end_of_word": END_OF_WORD_CHARACTER,
            "padding": PADDING_CHARACTER,
            "special_tokens": {BOS_TOKEN: BEGINNING_OF_SENTENCE_CHARACTER, EOS_TOKEN: END_OF_SENTENCE_CHARACTER},
        },
    }


# How sentences meet the graphs (the manifest's `sentences` entry; docs/package-format.md).
SENTENCE_RULES = {
    "boundaries": "bilm_graph",  # the biLM graph adds <S> and </S> around each row's real tokens
    "empty": "omit",  # a sentence with no tokens is not run; its result has 0 positions
    "padding": "trailing_zero_rows",  # a row's real tokens first, then all-zero char rows
}

# The initial state's layout in the manifest (`initial_state`): h `(n_layers, 2, projection_dim)`,
# c `(n_layers, 2, dim)`; the graphs take them with a batch axis inserted at 2.
STATE_LAYOUT = {
    "dtype": "float32",
    "axes": ["layer", "direction", "unit"],
    "directions": ["forward", "backward"],
    "batch_axis": 2,
}

# Fields a reader needs, with their JSON types; a package lacking one, or holding another type,
# fails to load naming it (docs/package-format.md). The rules' values are checked after.
REQUIRED_FIELDS: dict[str, type] = {
    "format_version": int,
    "architecture.lstm.n_layers": int,
    "architecture.lstm.projection_dim": int,
    "architecture.lstm.dim": int,
    "chars.scheme": str,
    "chars.max_characters_per_token": int,
    "chars.id_offset": int,
    "chars.padding_row_id": int,
    "graphs.token_embedder.file": str,
    "graphs.bilm.file": str,
    "precision.name": str,
    "initial_state.mode": str,
    **{f"initial_state.{key}": type(value) for key, value in STATE_LAYOUT.items()},
    "initial_state.h": list,
    "initial_state.c": list,
    **{f"sentences.{key}": type(value) for key, value in SENTENCE_RULES.items()},
    "conformance.file": str,
    "files": dict,
}
