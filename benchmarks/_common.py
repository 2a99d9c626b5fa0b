"""What the benchmark scripts share: their folders, fresh child processes that report in JSON,
and one way to read a process's peak memory.

A child program is a string run with `python -c` (a fresh interpreter: its imports, start-up and
memory are its own). This folder is on the child's PYTHONPATH, so a child reads its own peak
with `from _common import peak_rss_mib`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"


def peak_rss_mib(pid: int | str = "self") -> float:
    """The peak resident memory of a process (VmHWM of `/proc/PID/status`), in MiB.

    VmHWM, not `ru_maxrss`: Linux carries a parent's peak at fork into its child's `ru_maxrss`
    through exec, so a small child of a large parent would report the parent's size.

    Raises:
        OSError: the process is gone (or this is not Linux).
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f"/proc/{pid}/status has no VmHWM line")


def run_child(
    code: str,
    *args: object,
    python: str | Path = sys.executable,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> dict:
    """Run `code` in a fresh interpreter with `args` as `sys.argv[1:]`; its last stdout line, as JSON.

    Args:
        env: the child's environment (default: this one's); this folder is put first on its PYTHONPATH.

    Raises:
        RuntimeError: the child exited non-zero (with the end of its stderr).
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    out = subprocess.run([str(python), "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)
    if out.returncode:
        raise RuntimeError(f"a child of {Path(sys.argv[0]).name} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# `elmo-export ARGS` in a child: its exit code, wall time and its own peak memory.
_EXPORT = """
import json, sys, time
from _common import peak_rss_mib
from elmo_export.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}))
"""


def export_in_child(*args: object) -> dict:
    """`elmo-export ARGS` in a fresh process -> `{"seconds", "wall_s", "peak_rss_mib"}`.

    `seconds` is the export itself; `wall_s` is from spawn to exit (start-up and imports too).

    Raises:
        RuntimeError: the export failed (its exit code and output).
    """
    started = time.perf_counter()
    report = run_child(_EXPORT, *args)
    report["wall_s"] = time.perf_counter() - started
    if report["code"] != 0:
        raise RuntimeError(f"elmo-export {' '.join(map(str, args))} exited {report['code']}")
    return report
