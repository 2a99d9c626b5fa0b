"""`elmo-embed`: a text file in, AllenNLP's HDF5 layout (or NPZ) out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from elmo_runtime import Elmo, cli
from elmo_runtime import contract as C
from elmo_runtime.corpus import files

LINES = ["The cat sat on the mat.", "Hi!", "Call me Ishmael.", "The cat sat on the mat."]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_hdf5_in_allennlp_layout(tiny_package, elmo, text_file, tmp_path, sizes):
    out = tmp_path / "out.hdf5"
    assert run(tiny_package, text_file, out) == 0
    want = elmo.embed(LINES)
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["0", "1", "2", "3", "sentence_to_index"]
        for i, vectors in enumerate(want):
            assert (
                f[str(i)].shape
                == vectors.shape
                == (sizes.layers, len(elmo.embed([LINES[i]], return_tokens=True)[1][0]), sizes.dim)
            )
            assert f[str(i)].dtype == np.float32
            np.testing.assert_allclose(f[str(i)][...], vectors, atol=1e-5)
        # As AllenNLP writes it: a (1,) string dataset holding json.dumps({sentence: key}).
        index = f["sentence_to_index"]
        assert index.shape == (1,)
        mapping = json.loads(index[0])
    assert mapping == {"The cat sat on the mat.": "3", "Hi!": "1", "Call me Ishmael.": "2"}  # last wins


@pytest.mark.parametrize("flag", ["--top", "--average"])
def test_one_layer_per_token(tiny_package, elmo, text_file, tmp_path, flag):
    out = tmp_path / "out.hdf5"
    assert run(tiny_package, text_file, out, flag, "--batch-size", 2) == 0
    want = elmo.embed(LINES, layers=flag[2:])
    with h5py.File(out, "r") as f:
        for i, vectors in enumerate(want):
            assert f[str(i)].shape == vectors.shape and vectors.ndim == 2
            np.testing.assert_allclose(f[str(i)][...], vectors, atol=1e-5)


def test_npz_format(tiny_package, elmo, text_file, tmp_path):
    out = tmp_path / "out.npz"
    assert run(tiny_package, text_file, out, "--format", "npz", "--top") == 0
    with np.load(out) as f:  # no pickles needed
        assert sorted(f.files) == ["0", "1", "2", "3", "sentence_to_index"]
        for i, vectors in enumerate(elmo.embed(LINES, layers="top")):
            np.testing.assert_allclose(f[str(i)], vectors, atol=1e-5)
        assert json.loads(str(f["sentence_to_index"]))["Hi!"] == "1"


def test_tokenized_input_is_split_on_whitespace(tiny_package, elmo, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("Don't  stop\tnow.\n", encoding="utf-8")
    run(tiny_package, path, tmp_path / "tok.hdf5", "--tokenized", "--top")
    run(tiny_package, path, tmp_path / "raw.hdf5", "--top")
    with h5py.File(tmp_path / "tok.hdf5") as tok, h5py.File(tmp_path / "raw.hdf5") as raw:
        np.testing.assert_allclose(tok["0"][...], elmo.embed([["Don't", "stop", "now."]], layers="top")[0], atol=1e-5)
        assert raw["0"].shape[0] == 5  # Don 't stop now .


def test_crlf_and_bom(tiny_package, tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes("\ufeffHi there\r\nBye\r\n".encode("utf-8"))
    out = tmp_path / "out.hdf5"
    assert run(tiny_package, path, out, "--tokenized") == 0
    with h5py.File(out) as f:
        assert f["0"].shape[1] == 2 and f["1"].shape[1] == 1
        assert json.loads(f["sentence_to_index"][0]) == {"Hi there": "0", "Bye": "1"}


def test_refuses_to_overwrite_without_force(tiny_package, text_file, tmp_path, capsys):
    out = tmp_path / "out.hdf5"
    out.write_text("precious")
    assert run(tiny_package, text_file, out) == 1
    assert "out.hdf5 exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert run(tiny_package, text_file, out, "--force") == 0
    with h5py.File(out) as f:
        assert "3" in f


def test_empty_line_is_an_error_naming_it(tiny_package, tmp_path, capsys, sizes):
    path = tmp_path / "gaps.txt"
    path.write_text("First.\nSecond.\n\nFourth.\n", encoding="utf-8")
    out = tmp_path / "out.hdf5"
    assert run(tiny_package, path, out) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: line is empty" in err and "--allow-empty-lines" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []

    assert run(tiny_package, path, out, "--allow-empty-lines") == 0
    with h5py.File(out) as f:
        assert f["2"].shape == (sizes.layers, 0, sizes.dim) and f["3"].shape[1] == 2


def test_invalid_utf8_names_the_line(tiny_package, tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"Fine.\nAlso fine.\nCaf\xe9 cr\xe8me.\n")
    out = tmp_path / "out.hdf5"
    assert run(tiny_package, path, out) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: not valid UTF-8 (byte b'\\xe9' at column 4)" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_empty_file(tiny_package, tmp_path, capsys):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert run(tiny_package, path, tmp_path / "out.hdf5") == 1
    assert "empty.txt is empty: there are no sentences to embed" in capsys.readouterr().err
    assert not (tmp_path / "out.hdf5").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no input", "input file not found"),
        ("no package", "model package not found"),
        ("newer package", "is newer than this runtime reads"),
        ("no output directory", "output directory"),
    ],
)
def test_clear_errors_without_tracebacks(tiny_package, text_file, tmp_path, capsys, problem, message):
    package, source, out = Path(tiny_package), text_file, tmp_path / "out.hdf5"
    if problem == "no input":
        source = tmp_path / "missing.txt"
    elif problem == "no package":
        package = tmp_path / "missing-package"
    elif problem == "newer package":
        package = tmp_path / "newer"
        package.mkdir()
        for f in Path(tiny_package).iterdir():
            (package / f.name).write_bytes(f.read_bytes())
        manifest = json.loads((package / "elmo.json").read_text())
        (package / "elmo.json").write_text(json.dumps({**manifest, "format_version": C.FORMAT_VERSION + 1}))
    elif problem == "no output directory":
        out = tmp_path / "missing" / "out.hdf5"
    assert run(package, source, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("elmo-embed: error: ") and message in err and "Traceback" not in err


def test_a_crash_leaves_no_truncated_output(tiny_package, text_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.hdf5"
    out.write_text("the previous, complete output")

    def crashing(self, sentences, **kwargs):
        for i, _ in enumerate(sentences):
            if i == 2:
                raise MemoryError("simulated crash")
            yield np.zeros((3, 1, 32), np.float32), ["word"]

    monkeypatch.setattr(Elmo, "embed_iter", crashing)
    assert run(tiny_package, text_file, out, "--force") == 1
    assert capsys.readouterr().err == (
        "elmo-embed: error: out of memory (simulated crash); lower --batch-tokens, or give the process more memory\n"
    )  # one line, not a traceback
    assert out.read_text() == "the previous, complete output" and leftovers(tmp_path) == []


def test_input_is_streamed(tiny_package, tmp_path, monkeypatch):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"Sentence number {i} .\n" for i in range(3000)), encoding="utf-8")
    lines_read, read_at_first_write = 0, []
    real_read, real_add = files.read_lines, files._Hdf5Writer.add

    def counting_read(source):
        nonlocal lines_read
        for item in real_read(source):
            lines_read += 1
            yield item

    def noting_add(self, key, array, tokens=None):
        read_at_first_write.append(lines_read)
        real_add(self, key, array, tokens)

    monkeypatch.setattr(files, "read_lines", counting_read)
    monkeypatch.setattr(files._Hdf5Writer, "add", noting_add)
    assert run(tiny_package, path, tmp_path / "out.hdf5", "--batch-tokens", 128, "--top") == 0
    assert lines_read == 3000 and read_at_first_write[0] < 200  # one chunk, not the file


def test_progress_bar_only_when_asked_or_on_a_terminal(tiny_package, text_file, tmp_path, capsys):
    files.embed_file(tiny_package, text_file, tmp_path / "quiet.hdf5")  # stderr is not a terminal here
    assert "sentences/s" not in capsys.readouterr().err
    files.embed_file(tiny_package, text_file, tmp_path / "shown.hdf5", progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "sentences/s" in err


def test_the_console_script(tiny_package, text_file, tmp_path, sizes):
    out = tmp_path / "out.hdf5"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(tiny_package),
            str(text_file),
            str(out),
            "--average",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "on CPUExecutionProvider" in done.stderr and "wrote 4 sentences" in done.stderr
    with h5py.File(out) as f:
        assert f["1"].shape == (2, sizes.dim)
    bad = subprocess.run(
        [sys.executable, "-m", "elmo_runtime.cli", str(tiny_package), str(text_file), str(out)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_standard_input_and_forget_sentences(tiny_package, elmo, tmp_path):
    out = tmp_path / "out.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(tiny_package),
            "-",
            str(out),
            "--top",
            "--format",
            "npz",
            "--forget-sentences",
            "-q",
        ],
        input="Piped in.\nAnd again.\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    with np.load(out) as f:
        assert sorted(f.files) == ["0", "1"]
        np.testing.assert_allclose(f["1"], elmo.embed(["And again."], layers="top")[0], atol=1e-5)


def test_embed_file_reuses_an_elmo(elmo, text_file, tmp_path):
    assert files.embed_file(elmo, text_file, tmp_path / "out.hdf5", layers="top", batch_size=1) == 4


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_every_precision_writes_what_elmo_embeds(exported, text_file, tmp_path, precision):
    package = exported("tiny", precision)
    out = tmp_path / f"{precision}.hdf5"
    assert run(package, text_file, out, "--top") == 0
    want = Elmo(package, device="cpu").embed(LINES, layers="top")
    with h5py.File(out) as f:
        assert sorted(f.keys()) == ["0", "1", "2", "3", "sentence_to_index"]
        for i, vectors in enumerate(want):
            np.testing.assert_allclose(f[str(i)][...], vectors, atol=1e-6)
