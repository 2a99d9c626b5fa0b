"""The torch-free promise: the base install (no extras) in a fresh venv embeds text without torch.

The project is built into a wheel (from a copy of the sources, so the checkout is untouched)
and installed with its declared dependencies into a new venv without system site-packages,
exactly as `pip install elmo-onnx` would: a base dependency that pulled in torch, or a runtime
import of torch or elmo_export, fails here. The package embedded there is exported by this
process. Skips when pip cannot reach a package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it with its dependencies: minutes

REPO = Path(__file__).resolve().parents[1]
# Copied to build from: everything but environments, VCS data and build or test leftovers.
NOT_SOURCES = shutil.ignore_patterns(
    ".venv*", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "out", "*.whl"
)
OFFLINE_SIGNS = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
)


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=clean_env(), timeout=timeout
    )


def test_base_install_embeds_text_without_torch(tiny_package, tmp_path):
    started = time.perf_counter()
    source = shutil.copytree(REPO, tmp_path / "src", ignore=NOT_SOURCES)
    built = pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"), str(source))
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("elmo_onnx-*.whl")
    import zipfile

    members = zipfile.ZipFile(wheel).namelist()
    # What the runtime never reads stays out: the default model's TF weights and training files.
    assert not [m for m in members if m.endswith((".hdf5", "vocab.txt"))], members
    assert {
        "elmo_runtime/default/elmo.json",
        "elmo_runtime/default/bilm.onnx.data",
        "elmo_runtime/catalog.json",
    } <= set(members)

    venv = tmp_path / "venv"
    # No pip inside (saves ensurepip's seconds): this interpreter's pip installs into it via --python.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=clean_env())
    python = venv / "bin" / "python"
    installed = pip("--python", str(python), "install", "-q", str(wheel))
    if installed.returncode != 0 and any(sign in installed.stderr for sign in OFFLINE_SIGNS):
        pytest.skip(f"pip cannot reach a package index: {installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stderr

    listed = pip("--python", str(python), "list", "--format", "freeze")
    names = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert {"elmo-onnx", "numpy", "onnxruntime", "tokenizers", "tqdm"} <= names
    assert not names & {"torch", "onnx", "onnxruntime-gpu", "tensorflow", "pyarrow", "ray", "h5py"}, sorted(names)

    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is importable'\n"
        "from elmo_runtime import Elmo\n"
        f"elmo = Elmo({str(tiny_package)!r})\n"
        "vectors = elmo.embed(['The base install embeds text.', 'No torch needed!'], layers='top')\n"
        "assert [v.shape for v in vectors] == [(6, 32), (4, 32)], [v.shape for v in vectors]\n"
        "default = Elmo().embed(['The shipped package needs no download.'], layers='top')\n"
        "assert default[0].shape == (7, 256), default[0].shape\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'elmo_export', 'huggingface_hub')]\n"
        "print('ok')\n"
    )
    ran = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr

    text = tmp_path / "in.txt"
    text.write_text("One line.\nAnother line.\n", encoding="utf-8")
    script = subprocess.run(
        [
            str(venv / "bin" / "elmo-embed"),
            str(tiny_package),
            str(text),
            str(tmp_path / "out.npz"),
            "--format",
            "npz",
            "--top",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert script.returncode == 0, script.stderr
    assert (tmp_path / "out.npz").is_file()
    # HDF5 output is the hdf5 extra: without it, one line saying how to get it, and no file.
    offline = {**clean_env(), "ELMO_ONNX_OFFLINE": "1", "ELMO_ONNX_CACHE": str(tmp_path / "cache")}
    readme_job = [str(venv / "bin" / "elmo-embed"), "default", str(text), str(tmp_path / "default.hdf5"), "-q"]
    script = subprocess.run(readme_job, capture_output=True, text=True, env=offline, cwd=tmp_path)
    assert script.returncode == 1 and script.stderr.count("\n") == 1, script.stderr
    assert "pip install 'elmo-onnx[hdf5]'" in script.stderr and not (tmp_path / "default.hdf5").exists()
    installed = pip("--python", str(python), "install", "-q", f"{wheel}[hdf5]")  # the README's first command
    assert installed.returncode == 0, installed.stderr
    script = subprocess.run(readme_job, capture_output=True, text=True, env=offline, cwd=tmp_path)
    assert script.returncode == 0 and (tmp_path / "default.hdf5").is_file(), script.stderr

    # The exporter's command is there, but says in one line what it needs instead of a traceback.
    export = subprocess.run(
        [str(venv / "bin" / "elmo-export"), "-o", str(tmp_path / "pkg")],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert export.returncode == 2
    assert export.stderr.count("\n") == 1 and "pip install torch==2.13.0" in export.stderr, export.stderr
    assert "Traceback" not in export.stderr and not (tmp_path / "pkg").exists()
    verify = subprocess.run(
        [str(venv / "bin" / "elmo-verify"), str(tiny_package)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert verify.returncode == 0 and "conformance passed" in verify.stdout, verify.stderr
    print(f"install test took {time.perf_counter() - started:.1f} s")
