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
        "lstm": {"dim": dim, "projection_dim": projection, "n_layers": 2, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": True},
        "char_cnn": {"embedding": {"dim": char_dim}, "filters": filters, "n_highway": highway,
                     "activation": "relu", "n_characters": 262, "max_characters_per_token": 50},
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
