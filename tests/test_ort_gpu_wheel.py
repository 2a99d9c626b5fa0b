"""`tools/ort_gpu_wheel.py`: the onnxruntime-gpu wheel cut into parts that fit one call to a GPU machine.

A maintenance tool for the lent GPU machines (not part of the product), tested so that a short
GPU slot does not find it broken.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


@pytest.fixture
def wheel_tool(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import ort_gpu_wheel

    return ort_gpu_wheel


def test_wheel_parts_fit_a_call_beside_the_checkout(wheel_tool):
    mib = 2**20
    size = wheel_tool.part_size(int(14.7 * mib))
    assert size == 45 * mib and 14.7 * mib + size <= wheel_tool.CALL_LIMIT - wheel_tool.MARGIN
    with pytest.raises(ValueError, match="56.0 MiB of a call's 64 MiB: 4 MiB is left"):
        wheel_tool.part_size(56 * mib)
    root = TOOLS.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    # This checkout, as the device tool would send it, leaves room for parts of a useful size.
    tree = wheel_tool.checkout_bytes(root)
    assert 0 < tree and tree + wheel_tool.part_size(tree) <= wheel_tool.CALL_LIMIT - wheel_tool.MARGIN


def test_wheel_parts_travel_one_call_at_a_time_and_join_back(wheel_tool, tmp_path):
    payload = np.random.default_rng(0).bytes(2_500_000)
    wheel = tmp_path / "here" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(payload)
    parts = wheel_tool.split(wheel, tmp_path / "here" / ".whl", 1_000_000)
    assert [p.stat().st_size for p in parts] == [1_000_000, 1_000_000, 500_000]

    checkout, store = tmp_path / "there", tmp_path / "parts"
    for n, part in enumerate(parts, 1):  # each call carries one folder; the store keeps what came
        shutil.copytree(part.parent, checkout / ".whl" / part.parent.name)
        held, missing = wheel_tool.receive(checkout, store)
        assert len(held) == n and len(missing) == 3 - n
        if n == 2:
            with pytest.raises(SystemExit, match=r"parts still missing .*\.003"):
                wheel_tool.join(store)
    assert wheel_tool.join(store).read_bytes() == payload

    (store / parts[1].name).write_bytes(b"corrupt")
    with pytest.raises(SystemExit, match="does not match its sha256"):
        wheel_tool.join(store)
    bad = checkout / ".whl" / "ort-gpu-9"
    shutil.copytree(parts[0].parent, bad)
    (bad / parts[0].name).write_bytes(b"corrupt")
    with pytest.raises(SystemExit, match="sha256 is not the one in"):
        wheel_tool.receive(checkout, store)

    calls = wheel_tool.device_calls(parts, tmp_path / "here")
    assert [carry for _, carry, _ in calls] == [[".whl/ort-gpu-1"], [".whl/ort-gpu-2"], [".whl/ort-gpu-3"]]
    assert all(command.startswith("python3 tools/ort_gpu_wheel.py receive") for command, _, _ in calls)
    assert "gpu.py --prepare-only --work /tmp/elmo-gpu" in calls[0][0] and "install" not in calls[0][0]
    assert calls[1] == ("python3 tools/ort_gpu_wheel.py receive", [".whl/ort-gpu-2"], None)
    assert "ort_gpu_wheel.py install && (" in calls[2][0] and calls[2][2] == 600
    run_there = "PYTHONPATH=/tmp/ort-gpu:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --work /tmp/elmo-gpu --out $OUT"
    assert run_there in calls[2][0]
