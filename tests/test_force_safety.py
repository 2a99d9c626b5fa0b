"""`--force` replaces an earlier output of ours, and never a user's files that merely sit beside a
file named like our marker (`elmo.json` for `elmo-export`, `_elmo.json` for `--engine ray`).

Each refusal comes before any slow work (no model is built, no cluster started) and leaves every
file as it was; the refusal names the foreign entries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elmo_export import export_package
from elmo_export.cli import EXIT_USAGE, main


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def project_folder(folder: Path, marker: str, content: str) -> Path:
    """A user's project: a config that happens to be named like our marker, notes, sources."""
    (folder / "src").mkdir(parents=True)
    (folder / marker).write_text(content)
    (folder / "important.txt").write_text("precious")
    (folder / "src" / "main.py").write_text("print('code')\n")
    return folder


def test_export_force_refuses_a_project_folder_with_an_elmo_json_of_its_own(tiny_weights, tmp_path):
    out = project_folder(tmp_path / "proj", "elmo.json", json.dumps({"name": "my app config"}))
    before = snapshot(out)
    with pytest.raises(FileExistsError, match=r"holds a elmo.json that is not an elmo-onnx manifest .*refusing"):
        export_package(*tiny_weights, out, force=True, progress=False)
    assert snapshot(out) == before


def test_export_force_refuses_a_package_with_the_users_files_in_it(tiny_package, tiny_weights, tmp_path, capsys):
    out = tmp_path / "pkg"
    shutil.copytree(tiny_package, out)
    (out / "NOTES.md").write_text("my notes")
    (out / "source").mkdir()
    (out / "source" / "weights.hdf5").write_bytes(b"the original")
    before = snapshot(out)
    assert main([str(tiny_weights[1].parent), "-o", str(out), "--force", "-q", "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        f"output {out} holds what is not part of the package its elmo.json lists: NOTES.md, source/; "
        "refusing to replace it (even with --force)" in err
    )
    assert len(err.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_ray_force_refuses_a_folder_with_a_foreign_marker_or_foreign_files(tiny_package, tmp_path):
    from elmo_runtime.corpus.job import embed_to_parquet

    (tmp_path / "in.txt").write_text("The cat sat .\n")
    out = project_folder(tmp_path / "rayproj", "_elmo.json", "{}")
    before = snapshot(out)
    with pytest.raises(FileExistsError, match=r"holds a _elmo.json that elmo-embed did not write .*refusing"):
        embed_to_parquet(tiny_package, tmp_path / "in.txt", out, force=True, workers=1, num_cpus=1, progress=False)
    assert snapshot(out) == before

    ours = tmp_path / "vectors"  # a real output of ours, into which someone put notes
    ours.mkdir()
    (ours / "_elmo.json").write_text(
        json.dumps(
            {"format": "elmo-onnx parquet folder", "version": 1, "parts": [{"file": "part-000000000000.parquet"}]}
        )
    )
    (ours / "part-000000000000.parquet").write_bytes(b"part")
    (ours / "important.txt").write_text("precious")
    before = snapshot(ours)
    with pytest.raises(
        FileExistsError,
        match=r"holds what is not part of a Parquet folder its _elmo.json lists: "
        r"important.txt; refusing",
    ):
        embed_to_parquet(tiny_package, tmp_path / "in.txt", ours, force=True, workers=1, num_cpus=1, progress=False)
    assert snapshot(ours) == before
