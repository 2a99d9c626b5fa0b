"""`elmo-embed` takes `allennlp elmo`'s command line: a script switches by the program's name."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from compat_catalog import official_models_as

from elmo_runtime import cli
from elmo_runtime.compat.allennlp import ElmoEmbedder

LINES = ["The cat sat on the mat .", "Hi !", "Call me Ishmael .", "The cat sat on the mat ."]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def read(path) -> dict:
    with h5py.File(path, "r") as f:
        return {key: (f[key][0] if key == "sentence_to_index" else f[key][...]) for key in f}


def test_allennlps_flags_write_what_the_embedder_writes(tiny_package, text_file, tmp_path):
    embedder = ElmoEmbedder(tiny_package, None)
    want = embedder.embed_batch([line.split() for line in LINES])
    assert (
        run(
            text_file,
            tmp_path / "all.hdf5",
            "--all",
            "--options-file",
            tiny_package,
            "--batch-size",
            2,
            "--cuda-device",
            -1,
        )
        == 0
    )
    got = read(tmp_path / "all.hdf5")
    assert json.loads(got.pop("sentence_to_index")) == {
        "The cat sat on the mat .": "3",
        "Hi !": "1",
        "Call me Ishmael .": "2",
    }
    assert sorted(got) == ["0", "1", "2", "3"]
    for i, vectors in enumerate(want):
        np.testing.assert_array_equal(got[str(i)], vectors)  # tokens split on whitespace, as AllenNLP did
    assert run(text_file, tmp_path / "top.hdf5", "--top", f"--options-file={tiny_package}", "--forget-sentences") == 0
    top = read(tmp_path / "top.hdf5")
    assert sorted(top) == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(top["1"], want[1][-1])
    (tmp_path / "unique.txt").write_text("One .\nTwo .\n", encoding="utf-8")
    assert (
        run(
            tmp_path / "unique.txt",
            tmp_path / "keys.hdf5",
            "--average",
            "--use-sentence-keys",
            "--options-file",
            tiny_package,
        )
        == 0
    )
    keyed = read(tmp_path / "keys.hdf5")
    assert sorted(keyed) == ["One .", "Two ."] and keyed["One ."].shape == (2, want[0].shape[-1])


def test_stateful_carries_rows_from_batch_to_batch_as_allennlp(tiny_package, text_file, tmp_path):
    assert run(text_file, tmp_path / "out.hdf5", "--options-file", tiny_package, "--batch-size", 3, "--stateful") == 0
    stateful = ElmoEmbedder(tiny_package, None, stateful=True)
    want = list(stateful.embed_sentences((line.split() for line in LINES), batch_size=3))
    got = read(tmp_path / "out.hdf5")
    for i, vectors in enumerate(want):
        np.testing.assert_array_equal(got[str(i)], vectors)
    # Line 3 repeats line 0 in another row of another batch: the carried state makes it differ.
    assert np.abs(got["3"] - got["0"]).max() > 1e-4


def test_the_default_model_and_two_paths_alone(tiny_package, text_file, tmp_path, monkeypatch):
    with official_models_as(tiny_package, tmp_path, monkeypatch, models=("original",)):
        assert run(text_file, tmp_path / "out.hdf5", "--all") == 0
    np.testing.assert_array_equal(
        read(tmp_path / "out.hdf5")["1"], ElmoEmbedder(tiny_package, None).embed_sentence(["Hi", "!"])
    )


def test_errors_are_one_line(tiny_package, text_file, tmp_path, capsys):
    (tmp_path / "out.hdf5").write_bytes(b"keep me")
    assert run(text_file, tmp_path / "out.hdf5", "--options-file", tiny_package) == 1
    assert "out.hdf5 exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "out.hdf5").read_bytes() == b"keep me"
    assert run(text_file, tmp_path / "out.hdf5", "--options-file", tiny_package, "--force") == 0
    url = "https://allennlp.s3.amazonaws.com/models/elmo/other/elmo_other_options.json"
    assert run(text_file, tmp_path / "x.hdf5", "--options-file", url) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"elmo-embed: error: unknown ELMo URL {url}") and "original" in err and err.count("\n") == 1


def test_as_a_process(tiny_package, text_file, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(text_file),
            str(tmp_path / "out.hdf5"),
            "--top",
            "--options-file",
            str(tiny_package),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(read(tmp_path / "out.hdf5")) == ["0", "1", "2", "3", "sentence_to_index"]
