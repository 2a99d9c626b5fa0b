"""ELMoForManyLangs (HIT-SCIR) model directories -> the reference biLM.

A released model directory (`<lang>.model/`, NLPL repository entries 136-179) holds:

- `config.json`: the training command line; its `config_path` names the architecture JSON by an
  absolute path on the authors' machine;
- the architecture JSON (`cnn_50_100_512_4096_sample.json`), which the downloads usually lack;
  looked for as ELMoForManyLangs does (`config_path` itself, then its file name in the model
  directory), else the architecture every released model used
  (`architectures.MANYLANGS_ARCHITECTURES["released"]`), with a note, and only if the weights fit it;
- `char.dic` and `word.dic`: `token<TAB>id` per line, read exactly as ELMoForManyLangs reads
  them (`read_dictionary`);
- `token_embedder.pkl` and `encoder.pkl`: `torch.save(module.state_dict())`, legacy or zip
  format, read with `torch.load(weights_only=True)` only: a pickle that asks for anything but
  tensors is refused, never run.

Conversion to the reference (which keeps TF's conventions, `weights.py`): the char table gets
a zero row 0 (ids shift by 1, as for the byte scheme); the AllenNLP-style highway (gate on the
input) becomes TF's (gate on the transform) by negating the gate half; the LSTM's gate blocks
(i, f, g, o) are reordered to TF's (i, j, f, o), and its bias already holds the learned forget
offset (no +1). The biLM is otherwise the same maths: layer 0 duplicated, skip connections
from the second layer, clips only where non-zero.
"""

from __future__ import annotations

import copy
import logging
import pickle
import zipfile
from pathlib import Path

import torch

from elmo_export.architectures import MANYLANGS_ARCHITECTURES
from elmo_export.model import ElmoBiLm, ElmoOptions
from elmo_export.sources.base import Loader, read_nlpl_meta
from elmo_export.weights import WeightFileError
from elmo_runtime.jsonfile import json_field, read_json
from elmo_runtime.package import sha256_of
from elmo_runtime.token_schemes import DictionaryScheme

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHAR_DIC = "char.dic"
WORD_DIC = "word.dic"
TOKEN_EMBEDDER_PKL = "token_embedder.pkl"
ENCODER_PKL = "encoder.pkl"
FAMILY = "elmoformanylangs"
# elmoformanylangs/configs/cnn_50_100_512_4096_sample.json: the architecture of every released
# model (the authors: the same hyper-parameters for all languages, HIT-SCIR/ELMoForManyLangs#26).
RELEASED_ARCHITECTURE_FILE = "cnn_50_100_512_4096_sample.json"
CHAR_SPECIALS = ("<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>")
WORD_SPECIALS = ("<oov>", "<pad>")


def is_manylangs_dir(directory: str | Path) -> bool:
    """Whether `directory` looks like an ELMoForManyLangs model (its two pickles, or config + a .dic)."""
    d = Path(directory)
    return (
        (d / ENCODER_PKL).exists()
        or (d / TOKEN_EMBEDDER_PKL).exists()
        or ((d / CONFIG_FILE).is_file() and ((d / CHAR_DIC).exists() or (d / WORD_DIC).exists()))
    )


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in path.parent.iterdir())) or "nothing"
        raise FileNotFoundError(f"ELMoForManyLangs model {path.parent}: {what} {path.name} is missing (found: {found})")
    return path


def _read_json(path: Path) -> dict:
    data = read_json(path, "ELMoForManyLangs configuration")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_architecture(directory: str | Path) -> tuple[dict, str | None]:
    """The architecture JSON of a model directory, found as ELMoForManyLangs finds it.

    Returns:
        `(architecture, path)`; path is None where the file is missing and the released
        architecture is returned instead (the caller checks that the weights fit it).

    Raises:
        FileNotFoundError: no `config.json`.
        ValueError: `config.json` or the architecture file is not valid JSON, or has no `config_path`.
    """
    d = Path(directory)
    config_path = _require(d / CONFIG_FILE, "the training configuration")
    config = _read_json(config_path)
    named = config.get("config_path")
    if not isinstance(named, str) or not named:
        raise ValueError(f"{config_path}: field config_path is {named!r}, expected the architecture JSON's path")
    for candidate in (d / named, d / Path(named.replace("\\", "/")).name):
        if candidate.is_file():
            return _read_json(candidate), str(candidate)
    log.warning(
        "%s: the architecture file %s is not in %s (released downloads lack it); assuming the released "
        "architecture (%s, the same for every ELMoForManyLangs language) and checking that the weights fit it",
        config_path,
        named,
        d,
        RELEASED_ARCHITECTURE_FILE,
    )
    return copy.deepcopy(MANYLANGS_ARCHITECTURES["released"]), None


def read_dictionary(path: str | Path) -> dict[str, int]:
    """A `.dic` file as ELMoForManyLangs reads it (`elmo.Embedder.get_model`), to get the same ids.

    Lines are split on every Unicode line break (`codecs` does), stripped of surrounding
    Unicode whitespace, split on tabs; a line left with only an id belongs to a whitespace
    character, which is stored under U+3000; a later duplicate overrides an earlier one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not `token<TAB>id`, naming the file and line.
    """
    path = _require(Path(path), "the dictionary")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e})") from None
    lexicon: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, "\u3000")
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'token<TAB>id', found {line!r}")
        lexicon[fields[0]] = int(fields[1])
    if not lexicon:
        raise ValueError(f"{path}: the dictionary is empty")
    return lexicon


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `torch.save(state_dict)` file (legacy or zip format), read with `weights_only=True` only.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: the pickle asks for more than tensors (refused, nothing of it runs),
            the file is not a torch save, or it holds something else than name -> tensor.
    """
    path = _require(Path(path), "the weights")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise WeightFileError(
            f"{path}: refused: the pickle asks for more than tensors ({reason}). Weights are read with "
            "torch.load(weights_only=True), which never runs code from the file; a released model holds only a "
            "state_dict"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError) as e:
        raise WeightFileError(
            f"{path}: not a readable torch.save file ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items()):
        raise WeightFileError(f"{path}: expected a state_dict (names -> tensors), found {type(data).__name__}")
    return data


def options_from_architecture(arch: dict, source: str, n_chars: int, n_words: int) -> ElmoOptions:
    """The reference's options for an ELMoForManyLangs architecture and its dictionary sizes.

    Raises:
        ValueError: a variant this exporter does not read (the `lstm` encoder or token
            embedder, no char CNN), or a missing or ill-typed field, naming `source`.
    """
    encoder = json_field(arch, "encoder.name", str, source)
    if encoder.lower() != "elmo":
        raise ValueError(
            f"{source}: encoder.name is {encoder!r}: only the 'elmo' encoder (ElmobiLm, every released model) is "
            "supported; the 'lstm' variant (LstmbiLm: nn.LSTM + one shared projection) is not ELMo's biLM"
        )
    embedder = json_field(arch, "token_embedder.name", str, source)
    if embedder.lower() != "cnn":
        raise ValueError(f"{source}: token_embedder.name is {embedder!r}: only the 'cnn' token embedder is supported")
    char_dim = json_field(arch, "token_embedder.char_dim", int, source)
    if char_dim <= 0:
        raise ValueError(f"{source}: token_embedder.char_dim is {char_dim}: word-only models are not supported")
    filters = json_field(arch, "token_embedder.filters", list, source)
    if not filters or not all(
        isinstance(f, list) and len(f) == 2 and all(type(v) is int and v > 0 for v in f) for f in filters
    ):
        raise ValueError(f"{source}: field token_embedder.filters is {filters!r}, expected [[width, count], ...]")
    # ELMoForManyLangs clips only where the value is truthy: 0 means no clip.
    cell_clip = json_field(arch, "encoder.cell_clip", (int, float), source, default=0) or None
    proj_clip = json_field(arch, "encoder.proj_clip", (int, float), source, default=0) or None
    word_dim = json_field(arch, "token_embedder.word_dim", int, source, default=0)
    options = ElmoOptions(
        char_embedding_dim=char_dim,
        filters=tuple((w, n) for w, n in filters),
        n_highway=json_field(arch, "token_embedder.n_highway", int, source),
        activation=json_field(arch, "token_embedder.activation", str, source),
        dim=json_field(arch, "encoder.dim", int, source),
        projection_dim=json_field(arch, "encoder.projection_dim", int, source),
        n_layers=json_field(arch, "encoder.n_layers", int, source),
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        use_skip_connections=True,  # ElmobiLm adds them from the second layer, unconditionally
        n_characters=n_chars + 1,
        max_characters_per_token=json_field(arch, "token_embedder.max_characters_per_token", int, source),
        token_projection=True,
        lstm_projection=True,
        char_vocab_size=n_chars,
        word_dim=max(word_dim, 0),
        word_vocab_size=n_words if word_dim > 0 else 0,
    )
    options.check(source)
    return options


def expected_shapes(o: ElmoOptions) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Every tensor of `token_embedder.pkl` and of `encoder.pkl`, with its shape."""
    e, f, p, d = o.char_embedding_dim, o.n_filters, o.projection_dim, o.dim
    token = {}
    if o.word_dim:
        token["word_emb_layer.embedding.weight"] = (o.word_vocab_size, o.word_dim)
    token["char_emb_layer.embedding.weight"] = (o.char_vocab_size, e)
    for i, (w, n) in enumerate(o.filters):
        token[f"convolutions.{i}.weight"] = (n, e, w)
        token[f"convolutions.{i}.bias"] = (n,)
    for k in range(o.n_highway):
        token[f"highways._layers.{k}.weight"] = (2 * f, f)
        token[f"highways._layers.{k}.bias"] = (2 * f,)
    token["projection.weight"] = (p, o.word_dim + f)
    token["projection.bias"] = (p,)
    encoder = {}
    for layer in range(o.n_layers):
        for direction in ("forward", "backward"):
            cell = f"{direction}_layer_{layer}"
            encoder[f"{cell}.input_linearity.weight"] = (4 * d, p)
            encoder[f"{cell}.state_linearity.weight"] = (4 * d, p)
            encoder[f"{cell}.state_linearity.bias"] = (4 * d,)
            encoder[f"{cell}.state_projection.weight"] = (p, d)
    return token, encoder


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, tuple], against: str) -> None:
    problems = []
    if path.name == ENCODER_PKL and any(k.startswith("encoder.weight_ih_l") for k in tensors):
        raise WeightFileError(
            f"{path}: this is the 'lstm' encoder variant (LstmbiLm: keys encoder.weight_ih_l0, ...), "
            "which is not ELMo's biLM; only the 'elmo' encoder is supported"
        )
    if path.name == TOKEN_EMBEDDER_PKL and any(k.startswith("char_lstm.") for k in tensors):
        raise WeightFileError(
            f"{path}: this is the 'lstm' token embedder variant (keys char_lstm.*); only the "
            "'cnn' token embedder is supported"
        )
    for name, shape in expected.items():
        if name not in tensors:
            problems.append(f"{name!r} is missing (expected shape {shape})")
        elif tuple(tensors[name].shape) != shape:
            problems.append(f"{name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
        elif not tensors[name].is_floating_point():
            problems.append(f"{name!r} is {tensors[name].dtype}, expected floating point")
        elif not torch.isfinite(tensors[name]).all():
            problems.append(f"{name!r} holds NaN or infinite values")
    problems += [
        f"unexpected tensor {name!r} with shape {tuple(t.shape)}" for name, t in tensors.items() if name not in expected
    ]
    if problems:
        raise WeightFileError(f"{path} does not match {against}:\n  " + "\n  ".join(problems))


def _specials(path: Path, lexicon: dict[str, int], names: tuple[str, ...], rows: int) -> None:
    missing = [n for n in names if n not in lexicon]
    if missing:
        raise ValueError(f"{path}: the special entries {', '.join(missing)} are missing")
    bad = sorted((i, t) for t, i in lexicon.items() if not 0 <= i < rows)
    if bad:
        raise ValueError(
            f"{path}: ids must lie in 0..{rows - 1} (the table has {rows} rows); "
            f"found {', '.join(f'{t!r}: {i}' for i, t in bad[:5])}"
        )


def load_manylangs(directory: str | Path) -> tuple[ElmoBiLm, dict]:
    """Build the reference biLM of an ELMoForManyLangs model directory, in eval mode.

    Returns:
        `(model, source)`: the model (with its `DictionaryScheme`) and the manifest's `source`
        entry (format, architecture file, each file's sha256, NLPL's `meta.json` if present).

    Raises:
        FileNotFoundError: a missing file, named.
        ValueError: a bad `config.json`, architecture or `.dic` (file and field or line named).
        WeightFileError: a pickle refused or unreadable, or tensors missing, unexpected or
            mis-shaped (all listed, with the file).
    """
    d = Path(directory)
    arch, arch_path = read_architecture(d)
    arch_source = arch_path or f"the released architecture ({RELEASED_ARCHITECTURE_FILE}, assumed: the model has none)"
    char_dim = json_field(arch, "token_embedder.char_dim", int, arch_source, default=0)
    word_dim = json_field(arch, "token_embedder.word_dim", int, arch_source, default=0)
    chars = read_dictionary(d / CHAR_DIC) if isinstance(char_dim, int) and char_dim > 0 else {}
    words = read_dictionary(d / WORD_DIC) if isinstance(word_dim, int) and word_dim > 0 else None
    options = options_from_architecture(arch, arch_source, len(chars), len(words or ()))

    token_expected, encoder_expected = expected_shapes(options)
    token_sd = load_state_dict(d / TOKEN_EMBEDDER_PKL)
    encoder_sd = load_state_dict(d / ENCODER_PKL)
    against = f"{arch_source} with {CHAR_DIC} ({len(chars)} entries)" + (
        f" and {WORD_DIC} ({len(words)} entries)" if words is not None else ""
    )
    _check_tensors(d / TOKEN_EMBEDDER_PKL, token_sd, token_expected, against)
    _check_tensors(d / ENCODER_PKL, encoder_sd, encoder_expected, against)
    _specials(d / CHAR_DIC, chars, CHAR_SPECIALS, len(chars))
    if words is not None:
        _specials(d / WORD_DIC, words, WORD_SPECIALS, len(words))

    model = ElmoBiLm(options, _scheme(chars, words, options.max_characters_per_token))
    _copy_weights(model, token_sd, encoder_sd)
    model.eval()
    source = _source_entry(d, arch_path, words is not None)
    log.info(
        "ELMoForManyLangs model %s: %d chars, %s words, architecture from %s",
        d,
        len(chars),
        len(words) if words is not None else "no",
        arch_source,
    )
    return model, source


def _scheme(chars: dict[str, int], words: dict[str, int] | None, max_characters_per_token: int) -> DictionaryScheme:
    """How the model's tokens become ids: its two dictionaries and their special entries."""
    oov_word = words["<oov>"] if words is not None else None
    return DictionaryScheme(
        chars=chars,
        words=words,
        max_characters_per_token=max_characters_per_token,
        # ELMoForManyLangs frames a word with its <eow> id first and its <bow> id last (frontend.py,
        # and biLM.py when training): the model learned it so.
        begin_of_word=chars["<eow>"],
        end_of_word=chars["<bow>"],
        padding=chars["<pad>"],
        unknown_char=chars["<oov>"],
        bos_char=chars["<bos>"],
        eos_char=chars["<eos>"],
        unknown_word=oov_word,
        bos_word=None if words is None else words.get("<bos>", oov_word),
        eos_word=None if words is None else words.get("<eos>", oov_word),
    )


def _source_entry(d: Path, arch_path: str | None, has_words: bool) -> dict:
    """The manifest's `source`: the format, the architecture file, each file's sha256, NLPL's meta."""
    files = [CONFIG_FILE, CHAR_DIC, TOKEN_EMBEDDER_PKL, ENCODER_PKL] + ([WORD_DIC] if has_words else [])
    source = {
        "format": FAMILY,
        "architecture_file": Path(arch_path).name if arch_path else None,
        "architecture_assumed": arch_path is None,
        "files": {name: sha256_of(d / name) for name in files},
    }
    meta = read_nlpl_meta(d)
    if meta is not None:
        source["meta"] = meta
    return source


def _copy_weights(model: ElmoBiLm, token_sd: dict[str, torch.Tensor], encoder_sd: dict[str, torch.Tensor]) -> None:
    o, te = model.options, model.token_embedder
    f, d = o.n_filters, o.dim

    def put(param: torch.Tensor, value: torch.Tensor) -> None:
        param.copy_(value.to(torch.float32))

    with torch.no_grad():
        chars = token_sd["char_emb_layer.embedding.weight"]
        # A zero row 0 in front: char ids shift by 1 so that an all-zero row means "no token".
        put(te.char_embedding.weight, torch.cat([torch.zeros(1, chars.shape[1]), chars.float()]))
        if te.word_embedding is not None:
            put(te.word_embedding.weight, token_sd["word_emb_layer.embedding.weight"])
        for i, conv in enumerate(te.convolutions):
            put(conv.weight, token_sd[f"convolutions.{i}.weight"])  # both are torch Conv1d (out, in, width)
            put(conv.bias, token_sd[f"convolutions.{i}.bias"])
        for k in range(o.n_highway):
            w, b = token_sd[f"highways._layers.{k}.weight"], token_sd[f"highways._layers.{k}.bias"]
            put(te.highway_transform[k].weight, w[:f])
            put(te.highway_transform[k].bias, b[:f])
            # AllenNLP's gate g = sigmoid(B x) keeps the input, TF's gate keeps the transform:
            # 1 - sigmoid(z) = sigmoid(-z), so the carry gate is the negated B half.
            put(te.highway_carry[k].weight, -w[f:])
            put(te.highway_carry[k].bias, -b[f:])
        put(te.projection.weight, token_sd["projection.weight"])  # (P, W + F): word part first, as ours
        put(te.projection.bias, token_sd["projection.bias"])

        # Gate blocks: ELMoForManyLangs (AllenNLP) i, f, g, o; the reference TF's i, j(=g), f, o.
        order = torch.cat([torch.arange(k * d, (k + 1) * d) for k in (0, 2, 1, 3)])
        for layer, cells in enumerate(model.cells):
            for direction, cell in zip(("forward", "backward"), cells):
                name = f"{direction}_layer_{layer}"
                put(cell.input_to_gates.weight, encoder_sd[f"{name}.input_linearity.weight"][order])
                put(cell.hidden_to_gates.weight, encoder_sd[f"{name}.state_linearity.weight"][order])
                # The bias holds the learned forget offset: no +1 at run time, unlike TF's file.
                put(cell.input_to_gates.bias, encoder_sd[f"{name}.state_linearity.bias"][order])
                put(cell.projection.weight, encoder_sd[f"{name}.state_projection.weight"])


def directory_loader(directory: str | Path) -> Loader:
    """The loader of an ELMoForManyLangs model directory (`load_manylangs`)."""
    d = Path(directory)
    return Loader(lambda: load_manylangs(d), f"the ELMoForManyLangs model {d}")
