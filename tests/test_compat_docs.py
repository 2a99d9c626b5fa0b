"""docs/migrate.md's examples run, as the docs convention runs them.

```python blocks run in order in one namespace, ```bash blocks in a shell, all in one temporary
folder per page; ```python norun, ```diff and ```text blocks are shown only. (Once the docs
site's own runner covers every page, this file is redundant with it.)
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migrate.md"
BLOCK = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)


def test_migration_page_examples_run(tmp_path, monkeypatch):
    blocks = [(m["info"].strip(), m["body"]) for m in BLOCK.finditer(PAGE.read_text(encoding="utf-8"))]
    runnable = [(info, body) for info, body in blocks if info in ("python", "bash")]
    assert len(runnable) == 7 and {"diff", "python norun"} <= {info for info, _ in blocks}
    # `elmo-embed` as this checkout's (the installed console script may point at another tree).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "elmo-embed"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m elmo_runtime.cli "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "page"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(PAGE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    namespace: dict = {"__name__": "migrate_page"}
    for info, body in runnable:
        if info == "python":
            exec(compile(body, f"{PAGE.name} block", "exec"), namespace)
        else:
            done = subprocess.run(["bash", "-e", "-c", body], cwd=work, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
    assert (work / "elmo.hdf5").is_file() and (work / "elmo-stateful.hdf5").is_file()
