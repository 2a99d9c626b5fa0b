"""RESULTS.md is shared: bench.py writes its head, each other script its own marked section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(script: str, text: str) -> None:
    """Replace `script`'s section of RESULTS.md (between its markers), or append it."""
    begin, end = f"<!-- {script}: begin -->", f"<!-- {script}: end -->"
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in current and end in current:
        current = current[: current.index(begin)] + block + current[current.index(end) + len(end) :]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(current, encoding="utf-8")
