"""Write docs/layout.md: every module of the tree with the first paragraph of its docstring.

    python tools/layout.py          # rewrite docs/layout.md
    python tools/layout.py --check  # exit 1 if docs/layout.md is not what the tree gives

The page is generated so that it cannot go stale: tests/test_docs.py fails when it differs from
what this script writes, and says to run it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "layout.md"
# The folders listed, in the data path's order, and what each one is for.
FOLDERS = {
    "elmo_export": "the exporter: weights -> PyTorch reference -> a verified ONNX package (needs torch)",
    "elmo_runtime": "the runtime: a package -> ONNX Runtime sessions -> arrays (numpy, onnxruntime, tokenizers)",
    "elmo_train": "training the project's default model",
    "benchmarks": "the scripts behind the figures in `benchmarks/RESULTS*.md` and `FOOTPRINT.md`",
    "tools": "maintenance scripts, not part of the product",
}
HEADER = """# Layout

Modules follow the data path: weights -> reference -> ONNX package -> runtime session -> arrays.
This page is generated from the modules' docstrings by `python tools/layout.py` (a test checks
that it is current). Also in the repository: `models/` (the official catalog and the default
model's TF weights, installed as `elmo_export.models`), `examples/` (the Node.js client and the
serverless handler), `tests/` and `docs/` (this site).
"""


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line (pipes escaped for the table)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|") or "(no docstring)"


def render() -> str:
    parts = [HEADER]
    for folder, what in FOLDERS.items():
        modules = sorted((REPO / folder).glob("**/*.py"))
        if not modules:
            continue
        parts.append(f"\n## `{folder}/`: {what}\n\n| module | what |\n| --- | --- |\n")
        for module in modules:
            parts.append(f"| `{module.relative_to(REPO).as_posix()}` | {summary(module)} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is stale: run python tools/layout.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
