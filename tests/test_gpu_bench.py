"""The GPU check (`benchmarks/gpu.py`) dry-run on the CPU.

No GPU here: the dry run takes every step of the CUDA run (export, placement, parity on the
device, timing loops, memory, budgets, the tables) with the CPU as the device, so that the
script a short GPU slot depends on cannot rot.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
DRY_RUN = [
    "--device",
    "cpu",
    "--preset",
    "tiny",
    "--repeats",
    "1",
    "--batches",
    "1",
    "--sizes",
    "4",
    "8",
    "--sentences",
    "16",
    "--budgets",
    "64",
    "128",
]


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu

    return gpu


def test_the_dry_run_takes_every_step_on_the_cpu(gpu, tmp_path, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    # As on the GPU machine: the packages made first (in the background there), then the run.
    assert gpu.main([*DRY_RUN, "--work", str(work), "--prepare-only"]) == 0
    exported = {p: (work / "tiny" / p / "bilm.onnx").stat().st_mtime_ns for p in ("fp32", "fp16")}
    assert not out.exists()
    assert gpu.main([*DRY_RUN, "--work", str(work), "--out", str(out)]) == 0
    assert {p: (work / "tiny" / p / "bilm.onnx").stat().st_mtime_ns for p in ("fp32", "fp16")} == exported

    result = json.loads((out / "gpu.json").read_text())
    assert result["engines"]["device"] == "cpu"
    assert sorted(p.name for p in (work / "tiny").iterdir() if p.is_dir()) == ["fp16", "fp32", "weights"]
    for precision in ("fp32", "fp16"):
        placement = result["placement"][precision]
        assert placement["heavy_off_device"] == [] and placement["off_device_share"] == 0.0
        assert placement["node_ms"]["CPUExecutionProvider"] > 0
        parity = result["parity"][precision]
        assert parity["passed"] and parity["failures"] == []
        # The device here is the CPU: the check must reproduce the export gate's own figures.
        for key in ("max_abs", "min_cosine", "mean_cosine"):
            assert parity["device"][key] == pytest.approx(parity["cpu"][key], rel=1e-6, abs=1e-9)
    assert result["parity"]["fp32"]["device"]["max_abs"] <= 1e-5
    assert result["parity"]["fp16"]["device"]["min_cosine"] >= 0.999

    assert [r["engine"] for r in result["speed"]] == ["PyTorch reference", "ONNX fp32", "ONNX fp16"]
    for r in result["speed"]:
        assert set(r["tokens_per_s"]) == {"4", "8"} and min(r["tokens_per_s"].values()) > 0
        assert r["latency_ms"] > 0 and np.isfinite(r["memory_mib"])
    for precision in ("fp32", "fp16"):
        rows = result["budgets"][precision]
        assert [r["budget"] for r in rows] == [64, 128] and min(r["tokens_per_s"] for r in rows) > 0
    assert result["budget_tokens"] > 0

    table = (out / "gpu.md").read_text()
    assert "| ONNX fp16 |" in table and "| PyTorch reference |" in table
    assert "| fp32 | max_abs 1e-05 |" in table and "| fp16 | min_cosine 0.999 |" in table
    assert table in capsys.readouterr().out


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_cuda_asked_for_without_cuda_stops_before_any_work(gpu, tmp_path, monkeypatch, capsys):
    import torch

    argv = ["--device", "cuda", "--preset", "tiny", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    if not torch.cuda.is_available():
        assert gpu.main(argv) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
        # A GPU that torch sees, beside the CPU build of onnxruntime: the case of the GPU machine.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch, "zeros", lambda *a, **k: None)
    assert gpu.main(argv) == 2
    err = capsys.readouterr().err
    assert "offers no CUDAExecutionProvider" in err and "CPU build" in err
    assert not (tmp_path / "work").exists()  # nothing exported, nothing measured


def test_work_placed_off_the_device_stops_the_run(gpu, tiny_package, tmp_path):
    events = gpu.profile_events(tiny_package, "cpu", [["The", "cat", "sat", "."], ["Hi", "!"]], tmp_path)
    on_cpu = gpu.summarize_placement(events, "CPUExecutionProvider")
    assert on_cpu["heavy_off_device"] == [] and on_cpu["off_device_share"] == 0.0
    gpu.check_placement(on_cpu, tiny_package, "CPUExecutionProvider")

    # The same run judged as a CUDA run: everything ran elsewhere, matrix products and Scans too.
    as_cuda = gpu.summarize_placement(events, "CUDAExecutionProvider")
    assert {"MatMul", "Scan"} <= set(as_cuda["heavy_off_device"]) and as_cuda["off_device_share"] == 1.0
    with pytest.raises(gpu.EngineError, match="placed .*MatMul.* off CUDAExecutionProvider .*would time the CPU"):
        gpu.check_placement(as_cuda, tiny_package, "CUDAExecutionProvider")
    assert list(tmp_path.glob("profile-*")) == []  # the traces are read and removed


def test_a_failing_measurement_is_recorded_and_the_others_go_on(gpu):
    result = {"errors": []}

    def broken():
        raise RuntimeError("CUDA failure 700: an illegal memory access\nat ...")

    assert gpu.attempt(result, "speed of ONNX fp16 on cuda", broken) is None
    assert result["errors"] == ["speed of ONNX fp16 on cuda: RuntimeError: CUDA failure 700: an illegal memory access"]
    assert gpu.attempt(result, "speed of ONNX fp32 on cuda", lambda: 42) == 42

    def fallback():
        raise gpu.EngineError("placed MatMul off CUDAExecutionProvider")

    with pytest.raises(gpu.EngineError):  # never recorded and skipped: it stops the run
        gpu.attempt(result, "placement", fallback)
    assert len(result["errors"]) == 1
