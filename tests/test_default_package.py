"""The package shipped inside the runtime is what exporting the default model in `models/` gives.

When a change alters export output (graphs, quantization, the manifest), this test fails and
names the one command that regenerates the shipped package; run it and commit the result.
"""

from __future__ import annotations

import json

import pytest

from elmo_runtime import contract as C
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE

REGENERATE = "elmo-export --quantize int8 -o elmo_runtime/default --force"


# Computed in float32 by torch (the warm state) or ONNX Runtime (parity figures, conformance
# vectors), whose kernels differ in the last bits between CPUs (AMD AVX2 vs Intel AVX-512/AMX).
# Everything else, the graph files' bytes above all, must be equal exactly.
CPU_DEPENDENT = ("initial_state.h", "initial_state.c", "parity.", f"files.{C.CONFORMANCE_FILE}.")


def _differences(shipped: dict, fresh: dict, path: str = "") -> list[str]:
    """Where two manifests differ. Graph files compare by sha256 (exactly); the warm state and the
    parity figures up to the last bits another CPU may change; the conformance file's hash not at
    all (`_conformance_differences` compares its contents)."""
    if path.startswith(f"files.{C.CONFORMANCE_FILE}."):
        return []
    if isinstance(shipped, dict) and isinstance(fresh, dict):
        keys = sorted(set(shipped) | set(fresh))
        return [d for k in keys for d in _differences(shipped.get(k), fresh.get(k), f"{path}.{k}".lstrip("."))]
    if isinstance(shipped, list) and isinstance(fresh, list) and len(shipped) == len(fresh):
        return [d for i, (a, b) in enumerate(zip(shipped, fresh)) for d in _differences(a, b, f"{path}[{i}]")]
    if path == "initial_state.sha256":  # the digest of h and c, whose last bits may differ by CPU: compared above
        return []
    numeric = path.startswith(CPU_DEPENDENT)
    if numeric and isinstance(shipped, float) and isinstance(fresh, float):
        return [] if shipped == pytest.approx(fresh, rel=1e-3, abs=1e-5) else [f"{path}: {shipped} != {fresh}"]
    return [] if shipped == fresh else [f"{path}: {shipped!r:.80} != {fresh!r:.80}"]


def _conformance_differences(shipped_path, fresh_path) -> list[str]:
    """Where two conformance files differ: every field exactly, but the expected arrays (the
    sentences', the time-chunks case's layers and final state, the stream's rows), which this
    CPU's ONNX Runtime computed, within the int8 conformance tolerance, the bar any runtime on
    any CPU must meet against the shipped file (`elmo_runtime.conformance.CONFORMANCE_TOLERANCES`: max abs 0.1,
    min cosine 0.999; another CPU's last bits move int8 layers by up to 0.025)."""
    from elmo_export.conformance import CONFORMANCE_TOLERANCES
    from elmo_runtime.compare import compare
    from elmo_runtime.conformance import decode_array

    bar = CONFORMANCE_TOLERANCES["int8"]

    def walk(want, got, path: str) -> list[str]:
        if isinstance(want, dict) and isinstance(got, dict) and "float32_base64" in want and "float32_base64" in got:
            a, b = decode_array(want, "shipped"), decode_array(got, "fresh")
            if a.shape != b.shape:
                return [f"conformance {path}: shape {a.shape} != {b.shape}"]
            if a.size == 0:
                return []
            max_abs, _, min_cos = compare(b, a)
            if max_abs.max() > bar.max_abs or min_cos.min() < bar.min_cosine:
                return [f"conformance {path}: max abs {max_abs.max():.3g}, min cosine {min_cos.min():.6f} (bar {bar})"]
            return []
        if isinstance(want, dict) and isinstance(got, dict) and sorted(want) == sorted(got):
            return [d for k in want for d in walk(want[k], got[k], f"{path}.{k}")]
        if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
            return [d for i, (a, b) in enumerate(zip(want, got)) for d in walk(a, b, f"{path}[{i}]")]
        return [] if want == got else [f"conformance {path}: {want!r:.80} != {got!r:.80}"]

    shipped = json.loads(shipped_path.read_text(encoding="utf-8"))
    return walk(shipped, json.loads(fresh_path.read_text(encoding="utf-8")), "")


def test_the_shipped_default_is_what_exporting_models_gives(tmp_path):
    from elmo_export.cli import main

    fresh = tmp_path / "default"
    # The regeneration command itself, into a temporary folder.
    assert main(["--quantize", "int8", "-o", str(fresh), "-q", "--no-progress"]) == 0
    shipped_manifest = json.loads((SHIPPED_PACKAGE / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    fresh_manifest = json.loads((fresh / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    differences = _differences(shipped_manifest, fresh_manifest)
    differences += _conformance_differences(SHIPPED_PACKAGE / C.CONFORMANCE_FILE, fresh / C.CONFORMANCE_FILE)
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
