"""Seeded random ELMo weights in the official layout, for tests and benchmarks.

Speed does not depend on the weights' values, and parity tests need only a model whose
activations look like a trained one's: not saturated at the clips, not vanishing. Weights are
drawn with fan-in scaling, which keeps every layer's activations at a similar scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from elmo_export.architectures import ARCHITECTURES, MANYLANGS_ARCHITECTURES, architecture
from elmo_export.model import ElmoBiLm, ElmoOptions
from elmo_export.weights import save_weights
from elmo_runtime import contract as C


def write_nlpl_zip(preset: str, path: str | Path, seed: int = 0) -> Path:
    """A flat model ZIP as the NLPL repository serves bilm-tf models: `options.json`,
    `model.hdf5`, `vocab.txt` (the LM's output vocabulary) and `meta.json`."""
    import tempfile
    import zipfile

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        options_path, weights_path = write_synthetic(preset, tmp, seed)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(options_path, "options.json")
            z.write(weights_path, "model.hdf5")
            z.writestr("vocab.txt", "<S>\n</S>\n<UNK>\nog\ni\n")
            z.writestr(
                "meta.json",
                json.dumps({"id": 0, "corpus": [{"description": f"synthetic {preset}", "lemmatized": False}]}),
            )
    return path


def random_model(options: ElmoOptions, seed: int = 0) -> ElmoBiLm:
    """A biLM with seeded fan-in-scaled weights."""
    generator = torch.Generator().manual_seed(seed)
    model = ElmoBiLm(options)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1, generator=generator)
            elif "char_embedding" in name:
                param.normal_(0.0, 1.0, generator=generator)
            else:
                fan_in = param[0].numel()
                param.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        # Highway carry gates lean towards carrying the input through, as trained ones do.
        for carry in model.token_embedder.highway_carry:
            carry.bias.sub_(1.0)
    return model.eval()


def write_synthetic(name: str, out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `options.json` + `weights.hdf5` of architecture `name` (`ARCHITECTURES`) into `out_dir`.

    Returns:
        `(options_path, weights_path)`.

    Raises:
        ValueError: unknown architecture (the known ones are listed).
    """
    data = architecture(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = ElmoOptions.from_dict(data, source=f"architecture {name}")
    options_path, weights_path = out_dir / C.OPTIONS_FILE, out_dir / C.WEIGHTS_FILE
    options_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    save_weights(random_model(options, seed), weights_path)
    return options_path, weights_path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write synthetic ELMo weights in the official layout.")
    parser.add_argument("architecture", choices=sorted(ARCHITECTURES))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options_path, weights_path = write_synthetic(args.architecture, args.out_dir, args.seed)
    print(options_path, weights_path, sep="\n")


# -- ELMoForManyLangs ------------------------------------------------------------------------

# Characters "seen in training", in first-seen order: Latin, accented, Cyrillic, CJK, a non-BMP
# emoji, and a space (its line strips to the id alone: ELMoForManyLangs stores it as U+3000).
_MANYLANGS_CHARS = list("<bos>eaé.ñ,ДжЖ中文") + ["\U0001f600", " "] + list("tTsS")
_MANYLANGS_WORDS = ["the", ".", ",", "Жж", "中文", "señor", "été", "x" * 60]


def write_synthetic_manylangs(
    preset: str,
    out_dir: str | Path,
    seed: int = 0,
    *,
    legacy_format: bool = True,
    architecture_file: bool = True,
    extra_words: int = 0,
) -> Path:
    """Write an ELMoForManyLangs model directory in its exact on-disk layout, with seeded weights.

    `config.json` names the architecture by an absolute path elsewhere (as released ones do), so
    it is found by its file name in the directory (or, with `architecture_file=False`, not at
    all); `char.dic` lists the characters in first-seen order, then the six specials;
    `word.dic` the four specials first, then words; both pickles are `torch.save(state_dict)`,
    in the legacy format PyTorch 0.4 wrote on a GPU (storages tagged `cuda:3`; or the zip format).

    Args:
        preset: a key of `architectures.MANYLANGS_ARCHITECTURES`.
        extra_words: more synthetic words in `word.dic` (a bigger word table).

    Returns:
        The directory.
    """
    from elmo_export.sources import manylangs as M

    if preset not in MANYLANGS_ARCHITECTURES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(MANYLANGS_ARCHITECTURES)}")
    arch = json.loads(json.dumps(MANYLANGS_ARCHITECTURES[preset]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch_name = M.RELEASED_ARCHITECTURE_FILE if preset == "released" else f"cnn_{preset}.json"
    config = _manylangs_config(arch_name)
    (out / M.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    if architecture_file:
        (out / arch_name).write_text(json.dumps(arch, indent=1), encoding="utf-8")

    chars = list(dict.fromkeys(_MANYLANGS_CHARS)) + list(M.CHAR_SPECIALS)
    (out / M.CHAR_DIC).write_text("".join(f"{c}\t{i}\n" for i, c in enumerate(chars)), encoding="utf-8")
    words = ["<oov>", "<bos>", "<eos>", "<pad>"] + _MANYLANGS_WORDS + [f"w{i}" for i in range(extra_words)]
    (out / M.WORD_DIC).write_text("".join(f"{w}\t{i}\n" for i, w in enumerate(words)), encoding="utf-8")

    token, encoder = _manylangs_state_dicts(arch, len(chars), len(words), seed)
    for name, state in ((M.TOKEN_EMBEDDER_PKL, token), (M.ENCODER_PKL, encoder)):
        if legacy_format:
            _save_like_pytorch_04_on_a_gpu(state, out / name)
        else:
            torch.save(state, out / name)
    return out


def _manylangs_config(arch_name: str) -> dict:
    """A released-style `config.json`: training paths on the authors' machines, the architecture
    by an absolute path elsewhere."""
    return {
        "seed": 1,
        "gpu": 3,
        "train_path": "/users4/conll18st/raw_text/xx.raw",
        "valid_path": None,
        "test_path": None,
        "config_path": f"/Users/somebody/conll2018/models/word_elmo/{arch_name}",
        "word_embedding": None,
        "optimizer": "adam",
        "lr": 0.001,
        "lr_decay": 0.8,
        "model": "/users4/conll18st/elmo/src/final_models/xx.model",
        "batch_size": 32,
        "max_epoch": 10,
        "clip_grad": 5,
        "max_sent_len": 20,
        "min_count": 3,
        "max_vocab_size": 150000,
        "save_classify_layer": False,
        "valid_size": 0,
        "eval_steps": 10000,
    }


def _manylangs_state_dicts(arch: dict, n_chars: int, n_words: int, seed: int) -> tuple[dict, dict]:
    """Seeded `token_embedder.pkl` and `encoder.pkl` state dicts, initialised as ELMoForManyLangs does."""
    from collections import OrderedDict

    te, enc = arch["token_embedder"], arch["encoder"]
    e, w_dim, p, d = te["char_dim"], te["word_dim"], enc["projection_dim"], enc["dim"]
    f = sum(n for _, n in te["filters"])
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def unit_rows(rows: int, dim: int) -> torch.Tensor:
        # EmbeddingLayer's init: uniform rows, each normalised to length 1.
        table = torch.rand(rows, dim, generator=g) * 0.5 - 0.25
        return table / table.norm(dim=1, keepdim=True)

    token = OrderedDict()
    token["word_emb_layer.embedding.weight"] = unit_rows(n_words, w_dim)
    token["char_emb_layer.embedding.weight"] = unit_rows(n_chars, e) * math.sqrt(e)
    for i, (width, n) in enumerate(te["filters"]):
        token[f"convolutions.{i}.weight"] = normal(n, e, width, std=1 / math.sqrt(e * width))
        token[f"convolutions.{i}.bias"] = normal(n, std=0.1)
    for k in range(te["n_highway"]):
        token[f"highways._layers.{k}.weight"] = normal(2 * f, f, std=1 / math.sqrt(f))
        bias = normal(2 * f, std=0.1)
        bias[f:] += 1.0  # Highway's init leans the gate towards carrying the input
        token[f"highways._layers.{k}.bias"] = bias
    token["projection.weight"] = normal(p, w_dim + f, std=1 / math.sqrt(w_dim + f))
    token["projection.bias"] = normal(p, std=0.1)
    encoder = OrderedDict()
    for layer in range(enc["n_layers"]):
        for direction in ("forward", "backward"):
            cell = f"{direction}_layer_{layer}"
            encoder[f"{cell}.input_linearity.weight"] = normal(4 * d, p, std=1 / math.sqrt(p))
            encoder[f"{cell}.state_linearity.weight"] = normal(4 * d, p, std=1 / math.sqrt(p))
            bias = normal(4 * d, std=0.1)
            bias[d : 2 * d] += 1.0  # forget gate (blocks i, f, g, o)
            encoder[f"{cell}.state_linearity.bias"] = bias
            encoder[f"{cell}.state_projection.weight"] = normal(p, d, std=1 / math.sqrt(d))
    return token, encoder


def _save_like_pytorch_04_on_a_gpu(state: dict, path: Path) -> None:
    """`torch.save` in the legacy (pre-1.6) format, storages tagged as CUDA ones, as the released
    models were written (PyTorch 0.4, trained on "gpu": 3).

    Today's torch writes the same legacy layout with CPU tags; the two tags are swapped in the
    pickle (a GLOBAL's module name, and a length-prefixed string), which changes no offsets.
    """
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    raw = buffer.getvalue()
    patched = raw.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n").replace(
        b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:3"
    )
    if b"cuda:3" not in patched or b"ctorch.cuda\nFloatStorage" not in patched or b"ctorch\nFloatStorage" in patched:
        raise RuntimeError("torch.save's legacy format changed: cannot tag its storages as CUDA ones")
    path.write_bytes(patched)


if __name__ == "__main__":
    main()
