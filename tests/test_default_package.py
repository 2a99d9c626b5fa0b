"""The package shipped inside the runtime is what exporting the default model in `models/` gives.

When a change alters export output (graphs, quantization, the manifest), this test fails and
names the one command that regenerates the shipped package; run it and commit the result.
"""

from __future__ import annotations

import json

import pytest

from elmo_runtime import contract as C
from elmo_runtime.resolve import SHIPPED_PACKAGE

REGENERATE = "elmo-export --quantize int8 -o elmo_runtime/default --force"


def _differences(shipped: dict, fresh: dict, path: str = "") -> list[str]:
    """Where two manifests differ. Graph files compare by sha256 (exactly); the warm state and the
    parity figures, computed in floating point by torch and ONNX Runtime, up to the last bits
    another CPU may change."""
    if isinstance(shipped, dict) and isinstance(fresh, dict):
        keys = sorted(set(shipped) | set(fresh))
        return [d for k in keys for d in _differences(shipped.get(k), fresh.get(k), f"{path}.{k}".lstrip("."))]
    if isinstance(shipped, list) and isinstance(fresh, list) and len(shipped) == len(fresh):
        return [d for i, (a, b) in enumerate(zip(shipped, fresh)) for d in _differences(a, b, f"{path}[{i}]")]
    numeric = path.startswith(("initial_state.h", "initial_state.c", "parity."))
    if numeric and isinstance(shipped, float) and isinstance(fresh, float):
        return [] if shipped == pytest.approx(fresh, rel=1e-3, abs=1e-5) else [f"{path}: {shipped} != {fresh}"]
    return [] if shipped == fresh else [f"{path}: {shipped!r:.80} != {fresh!r:.80}"]


def test_the_shipped_default_is_what_exporting_models_gives(tmp_path):
    from elmo_export.cli import main

    fresh = tmp_path / "default"
    # The regeneration command itself, into a temporary folder.
    assert main(["--quantize", "int8", "-o", str(fresh), "-q", "--no-progress"]) == 0
    shipped_manifest = json.loads((SHIPPED_PACKAGE / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    fresh_manifest = json.loads((fresh / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    differences = _differences(shipped_manifest, fresh_manifest)
    shipped_files = sorted(p.name for p in SHIPPED_PACKAGE.iterdir() if not p.name.startswith((".", "_")))
    if shipped_files != sorted(p.name for p in fresh.iterdir()):
        differences.append(f"files: {shipped_files} != {sorted(p.name for p in fresh.iterdir())}")
    assert not differences, (
        f"the shipped default package ({SHIPPED_PACKAGE}) is not what exporting models/ gives now; "
        f"regenerate it with `{REGENERATE}` and commit it. Differences: " + "; ".join(differences[:10])
    )


def test_the_shipped_default_verifies():
    from elmo_runtime.package import load_manifest

    manifest = load_manifest(SHIPPED_PACKAGE, verify_files=True)
    assert manifest.precision == "int8" and manifest.parity["passed"] is True
    total = sum(entry["bytes"] for entry in manifest.files.values())
    # 3.96 MB in format 2; format 3's conformance cases (time chunks, a stream, tokenizer texts) add 0.1 MB.
    assert total < 4_100_000, f"the shipped package grew to {total / 1e6:.2f} MB"
