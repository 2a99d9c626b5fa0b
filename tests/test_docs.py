"""Docs are code: every fenced block of README.md and docs/*.md runs here, and the site builds.

How a page's fenced blocks are treated (write new pages against this; docs/contributing.md says
the same for readers):

- ```python: run in order, in ONE namespace per page (a persistent child interpreter, this
  test's own `sys.executable`), so a later block sees an earlier block's names.
- ```bash: run with `bash -euo pipefail`, the interpreter's `bin/` first on PATH (the venv's
  console scripts: `elmo-embed`, `elmo-export`, ...).
- ```bash background port=NNNN: a long-running server, started in its own process group; the
  page goes on once TCP 127.0.0.1:NNNN accepts connections (at most 120 s) and the group is
  killed when the page ends, whatever happened.
- ```js run / ```javascript run: run with `node --input-type=module` (code on stdin). Plain
  ```js / ```javascript blocks are browser code: shown, not run. Keep those few; the code they
  show must be exercised by a test of its own (the browser tests).
- ```json, ```text, ```toml, ```console: data or output, not run.
- Any of the above with `norun` in its info string (```python norun): not run. Only for what CI
  cannot do (a GPU, the internet) or a block that a test of its own runs (named in
  NORUN_ALLOWED); `test_few_blocks_are_not_run` lists them and fails past that allow-list.
- Any other info string (or none) is an error: say what the block is.

Every page runs in a fresh temporary directory (its cwd, for python, bash and node alike), with
the environment variable ELMO_REPO set to the repository root (to reach `models/`, fixtures,
examples). Pages should use the shipped default package (`Elmo()`, `elmo-embed default`) or tiny
inputs, and export only tiny synthetic models: the whole of this file should take about 90 s.

The README's two set-up commands (SETUP_COMMANDS) are not run here: installing into a fresh
environment is what tests/test_runtime_install.py (the first, slow marker) and .ci/run (the
second, CI's own command) do. Everything else in README.md runs.

Run it: `python -m pytest -q tests/test_docs.py`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("**/*.md")])

# The README's set-up commands, verbatim: each must be in README.md exactly once (a test checks).
SETUP_COMMANDS = (
    "pip install -q \".[hdf5]\" && printf 'The cat sat on the mat .\\nELMo vectors depend on context .\\n' > "
    "sentences.txt && elmo-embed default sentences.txt vectors.hdf5",
    'pip install -q torch==2.13.0 && pip install -q -e ".[export,test]" && python -m pytest -q',
)
RUN = {"python", "bash"}
NODE = {"js", "javascript"}
DATA = {"json", "text", "toml", "console"}
# page -> how many `norun` blocks it may hold, and why.
NORUN_ALLOWED = {
    "README.md": 1,  # the GPU install (onnxruntime-gpu and a CUDA device)
    "docs/embed.md": 1,  # the same GPU install
    "docs/corpus.md": 1,  # the Spark recipe: tests/test_spark.py runs this very block
    "docs/export.md": 1,  # ELMoForManyLangs and NLPL models by name: downloads from the internet
    "docs/packages.md": 1,  # publishing to the Hugging Face Hub: the internet
    "docs/migrate.md": 1,  # Flair's ELMoEmbeddings: flair is too heavy for CI; tests/test_compat_flair.py runs it
}
SERVER_WAIT_S = 120
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # 1-based line of the block's first code line
    lang: str
    flags: tuple[str, ...]
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def option(self, name: str) -> str | None:
        return next((f.split("=", 1)[1] for f in self.flags if f.startswith(name + "=")), None)


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order (indented fences in list items too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(REPO).as_posix()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = next(
            (
                j
                for j in range(i + 1, len(lines))
                if lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])
            ),
            None,
        )
        assert end is not None, f"{page}:{i + 1}: a code fence is never closed"
        info = opening["info"].split()
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
        found.append(Block(page, i + 2, info[0] if info else "", tuple(info[1:]), "\n".join(body) + "\n"))
        i = end + 1
    return found


def is_run(block: Block) -> bool:
    """Whether the runner executes the block (see the module docstring for the rules)."""
    if block.lang not in RUN | NODE | DATA:
        raise AssertionError(
            f"{block.where}: fence info {block.lang or '(none)'!r}: use one of "
            f"{sorted(RUN | NODE | DATA)} (tests/test_docs.py says how each is treated)"
        )
    if "norun" in block.flags or block.lang in DATA:
        return False
    if block.lang in NODE:
        return "run" in block.flags
    return not (block.page == "README.md" and block.code.strip() in SETUP_COMMANDS)


# A child interpreter holding a page's namespace: one JSON line in (the code, its file:line),
# one JSON line out (None, or the traceback). Its own stdout and stderr pass through to pytest.
PYTHON_DRIVER = r"""
import json, sys, traceback
namespace = {"__name__": "__main__"}
channel, sys.stdout = sys.stdout, sys.stderr
for message in sys.stdin:
    code, where, line = json.loads(message)
    try:
        exec(compile("\n" * (line - 1) + code, where, "exec"), namespace)
        error = None
    except BaseException:
        error = traceback.format_exc()
    channel.write(json.dumps(error) + "\n")
    channel.flush()
"""


class PageRun:
    """Runs one page's blocks in `workdir`; `close()` stops its interpreter and servers."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "ELMO_REPO": str(REPO),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
        self.python: subprocess.Popen | None = None
        self.servers: list[subprocess.Popen] = []

    def run(self, block: Block) -> None:
        if block.lang == "python":
            self._python(block)
        elif block.lang == "bash" and "background" in block.flags:
            self._server(block)
        elif block.lang == "bash":
            self._command(["bash", "-euo", "pipefail", "-c", block.code], block)
        else:
            self._command(["node", "--input-type=module"], block, stdin=block.code)

    def _command(self, argv: list[str], block: Block, stdin: str | None = None) -> None:
        done = subprocess.run(
            argv, cwd=self.workdir, env=self.env, input=stdin, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
        )
        sys.stdout.write(done.stdout)
        assert done.returncode == 0, f"{block.where}: exit {done.returncode}\n{block.code}\n{done.stderr[-4000:]}"

    def _python(self, block: Block) -> None:
        if self.python is None:
            self.python = subprocess.Popen(
                [sys.executable, "-c", PYTHON_DRIVER],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        self.python.stdin.write(json.dumps([block.code, str(REPO / block.page), block.line]) + "\n")
        self.python.stdin.flush()
        # One reply line per block, so nothing waits in the pipe's buffer: select sees it coming.
        if not select.select([self.python.stdout], [], [], BLOCK_TIMEOUT_S)[0]:
            self.python.kill()
            raise AssertionError(f"{block.where}: the block ran past {BLOCK_TIMEOUT_S} s")
        reply = self.python.stdout.readline()
        assert reply, f"{block.where}: the page's interpreter died (exit {self.python.wait()})"
        error = json.loads(reply)
        assert error is None, f"{block.where}: the block raised\n{error}"

    def _server(self, block: Block) -> None:
        port = block.option("port")
        assert port and port.isdigit(), f"{block.where}: a background block needs port=NNNN"
        server = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.code], cwd=self.workdir, env=self.env, start_new_session=True
        )
        self.servers.append(server)
        deadline = time.monotonic() + SERVER_WAIT_S
        while True:
            assert server.poll() is None, f"{block.where}: the server exited ({server.returncode}) before listening"
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, (
                    f"{block.where}: nothing listens on port {port} after {SERVER_WAIT_S} s"
                )
                time.sleep(0.2)

    def close(self) -> None:
        if self.python is not None:
            self.python.stdin.close()
            try:
                self.python.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.python.kill()
                self.python.wait()
        for server in self.servers:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(server.pid, sig)
                    server.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue


def _page_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_of_the_page_runs(page, tmp_path):
    runnable = [block for block in blocks_of(page) if is_run(block)]
    if not runnable:
        return
    run = PageRun(tmp_path)
    try:
        for block in runnable:
            run.run(block)
    finally:
        run.close()


def test_few_blocks_are_not_run(capsys):
    skipped: dict[str, list[str]] = {}
    for page in PAGES:
        for block in blocks_of(page):
            if "norun" in block.flags:
                skipped.setdefault(block.page, []).append(f"{block.where}: {block.code.strip().splitlines()[0]}")
    with capsys.disabled():
        print("\n`norun` blocks:", *(line for lines in skipped.values() for line in lines), sep="\n  ")
    over = {page: lines for page, lines in skipped.items() if len(lines) > NORUN_ALLOWED.get(page, 0)}
    assert not over, f"more `norun` blocks than NORUN_ALLOWED allows (only for a GPU or the internet): {over}"


def test_the_readme_set_up_commands_are_there_once_each():
    # They are run elsewhere (see the module docstring): their text must not drift from what runs.
    readme = [block.code.strip() for block in blocks_of(REPO / "README.md") if block.lang == "bash"]
    assert [readme.count(command) for command in SETUP_COMMANDS] == [1, 1]


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_the_readme_links_point_at_files_of_the_repository():
    # The site's links are checked by `mkdocs build --strict`; the README is not part of the site.
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [m["target"].split("#")[0] for m in LINK.finditer(text) if "://" not in m["target"]]
    assert targets, "the README links into the docs"
    assert [t for t in targets if t and not (REPO / t).exists()] == []


def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs and mkdocs-material are in the test extra")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_layout_page_is_what_the_tree_gives():
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "layout.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_stays_a_front_door():
    # Issue #22: 10-12 KB. Reference material goes to docs/, not here.
    assert (REPO / "README.md").stat().st_size <= 12_288


def test_the_runner_reads_fences_as_documented(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "```python",
                "a = 1",
                "```",
                "- a list item:",
                "",
                "  ```bash",
                "  echo indented",
                "  ```",
                "```bash background port=8000",
                "serve",
                "```",
                "```js",
                "browser()",
                "```",
                "```js run",
                "node()",
                "```",
                "```python norun",
                "gpu()",
                "```",
                "```json",
                "{}",
                "```",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    blocks = blocks_of(page)
    assert [(b.line, b.lang, b.flags, b.code) for b in blocks] == [
        (2, "python", (), "a = 1\n"),
        (7, "bash", (), "echo indented\n"),
        (10, "bash", ("background", "port=8000"), "serve\n"),
        (13, "js", (), "browser()\n"),
        (16, "js", ("run",), "node()\n"),
        (19, "python", ("norun",), "gpu()\n"),
        (22, "json", (), "{}\n"),
    ]
    assert [is_run(b) for b in blocks] == [True, True, True, False, True, False, False]
    assert blocks[2].option("port") == "8000"
    with pytest.raises(AssertionError, match="fence info 'sh'"):
        is_run(Block("page.md", 1, "sh", (), "ls\n"))
    setup = Block("README.md", 1, "bash", (), SETUP_COMMANDS[1] + "\n")
    assert not is_run(setup) and is_run(Block("docs/x.md", 1, "bash", (), SETUP_COMMANDS[1] + "\n"))
