"""Named biLM architectures in the official `options.json` layout: one table, one meaning per name.

The official names are AllenNLP's (and the catalog's); the others are the project's own. The
synthetic weights (`synthetic.py`), the trainer (`elmo_train.train`) and the catalog tests all
read this table.
"""

from __future__ import annotations

import copy

_CNN_2048 = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]


def _options(dim: int, projection: int, highway: int, filters: list, char_dim: int = 16) -> dict:
    return {
        "lstm": {
            "dim": dim,
            "projection_dim": projection,
            "n_layers": 2,
            "cell_clip": 3,
            "proj_clip": 3,
            "use_skip_connections": True,
        },
        "char_cnn": {
            "embedding": {"dim": char_dim},
            "filters": filters,
            "n_highway": highway,
            "activation": "relu",
            "n_characters": 262,
            "max_characters_per_token": 50,
        },
    }


ARCHITECTURES: dict[str, dict] = {
    # The size of the TF fixtures' models: what most tests export.
    "tiny": _options(64, 16, 2, [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], char_dim=4),
    # The official architectures (AllenNLP's names).
    "small": _options(1024, 128, 1, _CNN_2048),  # 2x1024_128_2048cnn_1xhighway
    "medium": _options(2048, 256, 1, _CNN_2048),  # 2x2048_256_2048cnn_1xhighway
    "original": _options(4096, 512, 2, _CNN_2048),  # 2x4096_512_2048cnn_2xhighway
    # The project's default model (`models/default-wordnet`): bilm-tf's layout scaled down to
    # about 3M parameters, which train on two CPU cores in half an hour.
    "default-wordnet": _options(512, 128, 1, [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]]),
    # The smallest trainable one, for the trainer's tests.
    "train-tiny": _options(32, 16, 1, [[1, 8], [2, 8], [3, 16]], char_dim=4),
}


def architecture(name: str) -> dict:
    """A copy of the options of architecture `name`.

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return copy.deepcopy(ARCHITECTURES[name])


def _nlpl(**changes) -> dict:
    """A tiny version of LTG's bilm-tf training template (simple_elmo_training), with `changes`.

    A change `None` deletes the key (bilm-tf's default applies).
    """
    options = _options(32, 16, 2, [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], char_dim=4)
    options["char_cnn"]["n_characters"] = 261  # what bilm-tf training writes
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            del options[section][key]
        else:
            options[section][key] = value
    return options


# The variations NLPL's bilm-tf models (read by simple_elmo) may have, each on its own.
NLPL_VARIANTS: dict[str, dict] = {
    "nlpl": _nlpl(),
    "nlpl-maxchars-64": _nlpl(char_cnn__max_characters_per_token=64),
    "nlpl-maxchars-24": _nlpl(char_cnn__max_characters_per_token=24),
    "nlpl-no-highway-key": _nlpl(char_cnn__n_highway=None),  # bilm-tf: 0 highway layers
    "nlpl-no-layers-key": _nlpl(lstm__n_layers=None),  # bilm-tf: 1 LSTM layer
    # The filters sum to projection_dim: bilm-tf has no CNN_proj.
    "nlpl-no-cnn-proj": _nlpl(char_cnn__filters=[[1, 4], [2, 4], [3, 8]]),
    # projection_dim == dim: an LSTMCell without num_proj, no W_P_0.
    "nlpl-no-lstm-proj": _nlpl(lstm__dim=16),
    "nlpl-no-skip": _nlpl(lstm__use_skip_connections=False),
}
ARCHITECTURES.update(NLPL_VARIANTS)


# ELMoForManyLangs architecture JSONs (their own layout: `encoder`, `token_embedder`).
def _manylangs_architecture(
    dim: int, projection: int, highway: int, filters: list, char_dim: int, word_dim: int
) -> dict:
    return {
        "encoder": {
            "name": "elmo",
            "projection_dim": projection,
            "cell_clip": 3,
            "proj_clip": 3,
            "dim": dim,
            "n_layers": 2,
        },
        "token_embedder": {
            "name": "cnn",
            "activation": "relu",
            "filters": filters,
            "n_highway": highway,
            "word_dim": word_dim,
            "char_dim": char_dim,
            "max_characters_per_token": 50,
        },
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }


MANYLANGS_ARCHITECTURES: dict[str, dict] = {
    "tiny": _manylangs_architecture(64, 16, 2, [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], char_dim=4, word_dim=8),
    # What every released model has (elmoformanylangs/configs/cnn_50_100_512_4096_sample.json).
    "released": _manylangs_architecture(4096, 512, 2, _CNN_2048, char_dim=50, word_dim=100),
}
