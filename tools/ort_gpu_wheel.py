"""Bring the onnxruntime-gpu wheel to a GPU machine that has no network, in pieces.

The GPU machine (see the device tool's notes) has torch with CUDA 13 and cuDNN 9, onnx, and the
CPU build of onnxruntime; it cannot download anything. onnxruntime-gpu 1.31.1 (cp312,
manylinux_2_28, built for CUDA 13) is a 255.6 MB wheel, and one call to that machine carries at
most 64 MiB: the checkout's files plus the paths named in `carry`. So the wheel travels in parts,
one per call, in calls made back to back (a machine left idle goes back after about 30 s, and
its /tmp with it), and is put together and installed there.

Here, with network, in the checkout the device tool sends (the session's own; a helper's
worktree is not what travels):

    python3 tools/ort_gpu_wheel.py split

It downloads the wheel into `.whl/` (ignored by git) with `pip download`, measures what the
checkout sends (tracked and untracked-not-ignored files), cuts the wheel into parts that fit
beside it with a margin, each in its own folder `.whl/ort-gpu-N/` with `parts.json` (every
part's and the wheel's sha256), and prints the device calls to make, in order, back to back
(`device_calls`; with the checkout at 14.7 MiB: 6 parts of at most 45 MiB, 59.7 MiB a call):

    run(command="python3 tools/ort_gpu_wheel.py receive && (setsid nohup python3
                 benchmarks/gpu.py --prepare-only --work /tmp/elmo-gpu > /tmp/elmo-gpu-prepare.log 2>&1 &)",
        carry=[".whl/ort-gpu-1"])
    run(command="python3 tools/ort_gpu_wheel.py receive", carry=[".whl/ort-gpu-2"])
    ...
    run(command="python3 tools/ort_gpu_wheel.py receive && python3 tools/ort_gpu_wheel.py install
                 && (tail -3 /tmp/elmo-gpu-prepare.log; PYTHONPATH=/tmp/ort-gpu:. PYTHONUNBUFFERED=1
                 python3 benchmarks/gpu.py --work /tmp/elmo-gpu --out $OUT)", carry=[".whl/ort-gpu-6"], timeout_s=600)

The first call also starts the exports of `original` in the background (CPU work, with the CPU
build of onnxruntime already there), so they run while the other parts travel; the last run
waits for them (a lock) and reuses the packages.

There, `receive` checks each part it was sent against `parts.json` and moves it to
/tmp/ort-gpu-parts, saying which parts it holds and which are still missing; `install` joins
them, checks the wheel's sha256, and installs it with
`pip install --no-index --no-deps --target /tmp/ort-gpu` (its dependencies, numpy, protobuf,
flatbuffers, packaging and the CUDA 13 libraries, are already there), then checks that the
installed onnxruntime offers CUDAExecutionProvider. A rerun on the same machine finds the wheel
installed and skips the work. With /tmp/ort-gpu first on PYTHONPATH, the runtime warns that
onnxruntime and onnxruntime-gpu are both installed: they are, in separate folders, and the
GPU build is the one imported (gpu.py's table names the version and folder it ran).

Standard library only: it runs on the GPU machine before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

WHEEL = "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
REQUIREMENT = "onnxruntime-gpu==1.31.1"
PLATFORM_ARGS = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_28_x86_64",
]
CALL_LIMIT = 64 * 2**20  # what one device call may carry: the checkout and the carried paths
MARGIN = 4 * 2**20  # for files that appear in the checkout between now and the calls
MIN_PART = 8 * 2**20
LOCAL_DIR = ".whl"
PART_PREFIX = "ort-gpu-"
REMOTE_PARTS = Path("/tmp/ort-gpu-parts")
REMOTE_TARGET = Path("/tmp/ort-gpu")
MANIFEST = "parts.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkout_bytes(root: Path) -> int:
    """What a device call sends besides its carried paths: tracked and untracked-not-ignored
    files, and `shared/` where the checkout has one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    files = [root / name.decode() for name in listed if name]
    shared = root / "shared"
    if shared.is_dir():
        files += [f for f in shared.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def part_size(tree_bytes: int, limit: int = CALL_LIMIT, margin: int = MARGIN) -> int:
    """The largest whole-MiB part that fits in one call beside the checkout, with the margin.

    Raises:
        ValueError: the checkout leaves less than `MIN_PART` for a part.
    """
    room = (limit - margin - tree_bytes) // 2**20 * 2**20
    if room < MIN_PART:
        raise ValueError(
            f"the checkout sends {tree_bytes / 2**20:.1f} MiB of a call's {limit / 2**20:.0f} MiB: "
            f"{max(room, 0) / 2**20:.0f} MiB is left for a part; commit or remove large files first"
        )
    return room


def split(wheel: Path, out: Path, size: int) -> list[Path]:
    """Cut `wheel` into `size`-byte parts, each in `out/ort-gpu-N/` beside a copy of the manifest."""
    total = wheel.stat().st_size
    count = math.ceil(total / size)
    for old in out.glob(f"{PART_PREFIX}*"):
        shutil.rmtree(old)
    parts = []
    with wheel.open("rb") as f:
        for n in range(1, count + 1):
            folder = out / f"{PART_PREFIX}{n}"
            folder.mkdir(parents=True)
            path = folder / f"{wheel.name}.{n:03d}"
            path.write_bytes(f.read(size))
            parts.append(path)
    manifest = {
        "wheel": wheel.name,
        "bytes": total,
        "sha256": sha256(wheel),
        "part_bytes": size,
        "parts": {p.name: sha256(p) for p in parts},
    }
    for p in parts:
        (p.parent / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return parts


def receive(checkout: Path, store: Path) -> tuple[list[str], list[str]]:
    """Move the parts this call carried into `store`, each checked. Returns (held, missing)."""
    store.mkdir(parents=True, exist_ok=True)
    manifest = None
    for folder in sorted((checkout / LOCAL_DIR).glob(f"{PART_PREFIX}*")):
        manifest = json.loads((folder / MANIFEST).read_text())
        for part in folder.glob(f"{manifest['wheel']}.*"):
            if sha256(part) != manifest["parts"].get(part.name):
                raise SystemExit(f"{part}: its sha256 is not the one in {folder / MANIFEST}: send it again")
            shutil.move(str(part), store / part.name)
        shutil.copy(folder / MANIFEST, store / MANIFEST)
    if manifest is None and (store / MANIFEST).exists():
        manifest = json.loads((store / MANIFEST).read_text())
    if manifest is None:
        raise SystemExit(
            f"no part under {checkout / LOCAL_DIR} and none received before: carry a {PART_PREFIX}N folder"
        )
    held = sorted(name for name in manifest["parts"] if (store / name).exists())
    return held, sorted(set(manifest["parts"]) - set(held))


def join(store: Path) -> Path:
    """Put the wheel together from its parts in `store` and check it.

    Raises:
        SystemExit: a part is missing, or the wheel's sha256 is not the one recorded.
    """
    manifest = json.loads((store / MANIFEST).read_text())
    missing = [name for name in manifest["parts"] if not (store / name).exists()]
    if missing:
        raise SystemExit(
            f"parts still missing in {store}: {', '.join(missing)} (this machine was not the one "
            "that received them, or they were not sent): send them, then install"
        )
    wheel = store / manifest["wheel"]
    with wheel.open("wb") as out:
        for name in sorted(manifest["parts"]):
            with (store / name).open("rb") as part:
                shutil.copyfileobj(part, out)
    if sha256(wheel) != manifest["sha256"]:
        wheel.unlink()
        raise SystemExit(
            f"the joined {wheel.name} does not match its sha256 {manifest['sha256']}: send the parts again"
        )
    return wheel


def install(store: Path, target: Path) -> None:
    """Join, install into `target`, and check that CUDA is offered from there."""
    stamp = target / ".installed-sha256"
    manifest = json.loads((store / MANIFEST).read_text())
    if not (stamp.exists() and stamp.read_text() == manifest["sha256"]):
        wheel = join(store)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--upgrade",
                "--target",
                str(target),
                str(wheel),
            ],
            check=True,
        )
        stamp.write_text(manifest["sha256"])
    probe = (
        "import sys, onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers()); "
        "sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"
    )
    checked = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True
    )
    print(checked.stdout.strip() or checked.stderr.strip())
    if checked.returncode != 0:
        raise SystemExit(f"onnxruntime from {target} offers no CUDAExecutionProvider: {checked.stderr.strip()}")


def device_calls(parts: list[Path], root: Path) -> list[tuple[str, list[str], int | None]]:
    """(command, carry, timeout_s) of each device call, in order: one part each; the first also
    starts the exports in the background, the last installs the wheel and runs the GPU check."""
    receive_part = f"python3 tools/{Path(__file__).name} receive"
    calls = []
    for n, part in enumerate(parts, 1):
        command, timeout = receive_part, None
        if n == 1:
            command += (
                " && (setsid nohup python3 benchmarks/gpu.py --prepare-only --work /tmp/elmo-gpu "
                "> /tmp/elmo-gpu-prepare.log 2>&1 &)"
            )
        if n == len(parts):
            command += (
                f" && python3 tools/{Path(__file__).name} install && (tail -3 /tmp/elmo-gpu-prepare.log; "
                "PYTHONPATH=/tmp/ort-gpu:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --work /tmp/elmo-gpu "
                "--out $OUT)"
            )
            timeout = 600
        calls.append((command, [str(part.parent.relative_to(root))], timeout))
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("split", help="here: download the wheel and cut it into parts that fit a call")
    s.add_argument("--wheel", type=Path, default=None, help="a wheel already downloaded (default: download it)")
    sub.add_parser("receive", help="there: keep the parts this call carried")
    sub.add_parser("install", help="there: join the parts and install the wheel into /tmp/ort-gpu")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent

    if args.step == "split":
        local = root / LOCAL_DIR
        wheel = args.wheel or local / WHEEL
        if not wheel.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", *PLATFORM_ARGS, "-d", str(local), REQUIREMENT],
                check=True,
            )
        tree = checkout_bytes(root)
        size = part_size(tree)
        parts = split(wheel, local, size)
        print(
            f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB in {len(parts)} parts of at most "
            f"{size / 2**20:.0f} MiB; the checkout sends {tree / 2**20:.1f} MiB: each call "
            f"{(tree + size) / 2**20:.1f} MiB of {CALL_LIMIT / 2**20:.0f}. Device calls, back to back:"
        )
        for command, carry, timeout in device_calls(parts, root):
            print(f'  run(command="{command}", carry={json.dumps(carry)}{f", timeout_s={timeout}" if timeout else ""})')
    elif args.step == "receive":
        held, missing = receive(root, REMOTE_PARTS)
        print(f"{REMOTE_PARTS} holds {len(held)} parts; missing: {', '.join(missing) or 'none'}")
    else:
        install(REMOTE_PARTS, REMOTE_TARGET)


if __name__ == "__main__":
    main()
