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

from elmo_export.architectures import ARCHITECTURES, architecture
from elmo_export.model import ElmoBiLm, ElmoOptions
from elmo_export.weights import save_weights
from elmo_runtime import contract as C

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


if __name__ == "__main__":
    main()
