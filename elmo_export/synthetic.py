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

from elmo_export.model import ElmoBiLm, ElmoOptions
from elmo_export.weights import save_weights

_CNN_2048 = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]


def _options(dim: int, projection: int, highway: int, filters: list, char_dim: int = 16) -> dict:
    return {
        "lstm": {"dim": dim, "projection_dim": projection, "n_layers": 2, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": True},
        "char_cnn": {"embedding": {"dim": char_dim}, "filters": filters, "n_highway": highway,
                     "activation": "relu", "n_characters": 262, "max_characters_per_token": 50},
    }


# The official architectures (AllenNLP's names) and the fixtures' tiny one.
PRESETS: dict[str, dict] = {
    "tiny": _options(64, 16, 2, [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], char_dim=4),
    "small": _options(1024, 128, 1, _CNN_2048),  # 2x1024_128_2048cnn_1xhighway
    "medium": _options(2048, 256, 1, _CNN_2048),  # 2x2048_256_2048cnn_1xhighway
    "original": _options(4096, 512, 2, _CNN_2048),  # 2x4096_512_2048cnn_2xhighway
}


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


def write_synthetic(preset: str, out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `options.json` + `weights.hdf5` for a preset into `out_dir`.

    Returns:
        `(options_path, weights_path)`.

    Raises:
        ValueError: unknown preset (the known ones are listed).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = ElmoOptions.from_dict(PRESETS[preset], source=f"preset {preset}")
    options_path, weights_path = out_dir / "options.json", out_dir / "weights.hdf5"
    options_path.write_text(json.dumps(PRESETS[preset], indent=2) + "\n", encoding="utf-8")
    save_weights(random_model(options, seed), weights_path)
    return options_path, weights_path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write synthetic ELMo weights in the official layout.")
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options_path, weights_path = write_synthetic(args.preset, args.out_dir, args.seed)
    print(options_path, weights_path, sep="\n")


if __name__ == "__main__":
    main()
