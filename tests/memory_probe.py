"""Peak memory of writing one long line, beyond what the process held before: prints JSON.

    python memory_probe.py MODE PACKAGE LINE_FILE SCRATCH_FOLDER     # MODE: parquet, npz, hdf5 or ray

`ray` is the `--engine ray` worker (`ChunkWorker`) called in this process, as Ray would call it.
The line is tokenized text; every layer is written. A short line goes through the same path
first, so that what loads once (libraries, codecs, thread pools) is not counted; then the peak
is reset (`/proc/self/clear_refs`) and measured over the long line alone.
"""

import json
import sys
from pathlib import Path

import pyarrow.parquet  # noqa: F401  (imports are not what is measured)

from elmo_runtime import Elmo
from elmo_runtime.corpus.chunks import plan_chunks
from elmo_runtime.corpus.files import embed_file
from elmo_runtime.corpus.job import ChunkWorker

SETTINGS = {"layers": "all", "pool": None, "dtype": "float32", "tokenized": True, "state": None, "batch_tokens": None}


def rss(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024


def run(mode: str, package: str, elmo: Elmo, path: Path, out: Path) -> None:
    if mode == "ray":
        (chunk,), _ = plan_chunks(path)
        out.mkdir()
        worker = ChunkWorker(package, str(out), 1, SETTINGS, False)
        assert worker({k: [v] for k, v in chunk.to_dict().items()})["error"] == [""]
    else:
        embed_file(elmo, path, out, format=mode, tokenized=True, forget_sentences=True)


def main() -> None:
    mode, package, line, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    elmo = Elmo(package, device="cpu", threads=1)
    short = folder / "short.txt"
    short.write_text("a b c\n")
    run(mode, package, elmo, short, folder / "warm.out")  # libraries, codecs and thread pools load here
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss("VmRSS")
    run(mode, package, elmo, line, folder / "long.out")
    print(json.dumps({"beyond": rss("VmHWM") - before}))


if __name__ == "__main__":
    main()
