"""`elmo-serve` as the tests run it: a real server process on 127.0.0.1, a free port, its log in a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`python -m elmo_runtime.serve [package] ARGS` on 127.0.0.1, started and ready (`/health` 200).

    Args:
        package: a package folder (None: the server's default, the shipped package).
        args: more command-line flags.
        log: where its stderr goes.
        program: the command to run instead of `python -m elmo_runtime.serve` (it takes the same
            PACKAGE, --host and --port: benchmarks/serve_stub.py).
    """

    def __init__(self, package: str | Path | None, *args: str, log: Path, program: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        command = [
            *(program or [sys.executable, "-m", "elmo_runtime.serve"]),
            *([str(package)] if package else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("ELMO_PACKAGE", None)
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self) -> "Served":
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"elmo-serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"elmo-serve did not become ready in {START_TIMEOUT_S} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def metric(self, name: str, headers: dict | None = None) -> float:
        """One sample of /metrics, by its full name with labels (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", headers=headers or {}, timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
