"""The corpus paths under hostile input (reliability review 2026-12): the tokenizer's bound and
its failures (M6), resumed Ray jobs that trust nothing (M3), and the low ones of the runtime."""

import numpy as np
import pytest

from elmo_runtime.tokenize import MAX_RUN_CHARS, Tokenizer, TokenizerError, tokenize

# The smallest line the review found to make the tokenizer's Rust side panic (2.7 MB).
PANIC_LINE = "www." + "ab." * 909_092


def real_panic() -> BaseException:
    """The exception the tokenizer's Rust side raises when it panics (pyo3's PanicException)."""
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    from elmo_runtime.tokenize import TOKEN_PATTERN

    try:
        Split(Regex(TOKEN_PATTERN), behavior="removed", invert=True).pre_tokenize_str(PANIC_LINE)
    except BaseException as e:  # noqa: B036 -- what we want is exactly this one
        return e
    pytest.fail("the unbounded pattern no longer panics on the review's line: MAX_RUN_CHARS may be unneeded")


def test_a_long_url_like_run_is_tokenized_in_bounded_pieces():
    tokens = tokenize(PANIC_LINE)
    assert "".join(tokens) == PANIC_LINE  # nothing lost: the run holds no whitespace
    assert max(map(len, tokens)) == MAX_RUN_CHARS
    assert tokens[:2] == [PANIC_LINE[:MAX_RUN_CHARS - 1], "."]  # the URL rule on the first piece, minus its period


def test_text_around_a_long_run_is_tokenized_as_without_the_cut():
    run = "x" * (3 * MAX_RUN_CHARS + 7)
    assert tokenize(f"Mr. Smith , Inc. {run} said it .") == (
        ["Mr.", "Smith", ",", "Inc."] + [run[i:i + MAX_RUN_CHARS] for i in range(0, len(run), MAX_RUN_CHARS)]
        + ["said", "it", "."])
    assert tokenize("U.S. " + "y" * MAX_RUN_CHARS + " end.") == ["U.S.", "y" * MAX_RUN_CHARS, "end", "."]


def failing_tokenizer(monkeypatch):
    """Make the shared tokenizer's Rust side fail as it does when it panics."""
    panic = real_panic()

    class Panicking:
        def pre_tokenize_str(self, text):
            if "PANIC" in text:
                raise panic
            return [(t, (0, 0)) for t in text.split()]

    from elmo_runtime import tokenize as module

    monkeypatch.setattr(module._DEFAULT_TOKENIZER, "_pre_tokenizer", Panicking())


def test_a_tokenizer_panic_becomes_one_line_naming_the_line(tiny_package, tmp_path, monkeypatch, capsys):
    from elmo_runtime import Elmo, cli

    assert not isinstance(real_panic(), Exception)  # why `except Exception` did not catch it
    failing_tokenizer(monkeypatch)
    with pytest.raises(TokenizerError, match=r"^sentence 1: the tokenizer failed on this text \(PanicException: "):
        Elmo(tiny_package, device="cpu").embed(["fine", "PANIC here"])
    (tmp_path / "in.txt").write_text("The cat sat .\nPANIC here\n")
    assert cli.main([str(tiny_package), str(tmp_path / "in.txt"), str(tmp_path / "out.hdf5"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"elmo-embed: error: {tmp_path / 'in.txt'}:2: the tokenizer failed on this text "
                          "(PanicException: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "out.hdf5").exists()


def test_a_tokenizer_panic_in_a_ray_worker_is_one_line_naming_the_line(tiny_package, tmp_path, monkeypatch):
    """The worker function itself (no cluster): the chunk comes back as an error naming file and line."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.ray_data import ChunkWorker, _raise_chunk_error
    from elmo_runtime.sources import plan_chunks

    failing_tokenizer(monkeypatch)
    (tmp_path / "in.txt").write_text("The cat sat .\nPANIC here\n")
    (chunk,), _ = plan_chunks(tmp_path / "in.txt")
    for allow_empty in (False, True):  # read_chunk's empty-line check, then TableEmbedder's own split
        partial = tmp_path / f".out{allow_empty}.partial"
        partial.mkdir()
        worker = ChunkWorker(str(tiny_package), str(partial), 1, RAY_SETTINGS, allow_empty)
        (error,) = worker({k: [v] for k, v in chunk.to_dict().items()})["error"]
        where = f"{tmp_path / 'in.txt'}:2" if not allow_empty else "row with id 1"
        assert error.startswith(f"{'InputError' if not allow_empty else 'ValueError'}: {where}: the tokenizer failed")
        with pytest.raises(ValueError, match=r"the finished parts are kept") as raised:
            _raise_chunk_error(error, partial)
        assert "\n" not in str(raised.value)
        assert list(partial.iterdir()) == []


RAY_SETTINGS = {"layers": "top", "pool": None, "dtype": "float32", "tokenized": False, "state": None,
                "batch_tokens": None}


def test_the_review_line_embeds_through_elmo_embed_and_a_ray_worker(elmo, tiny_package, tmp_path):
    """The 2.7 MB line that made both paths end in a traceback: embedded, as its pieces."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from elmo_runtime import cli
    from elmo_runtime.ray_data import ChunkWorker
    from elmo_runtime.sources import plan_chunks

    (tmp_path / "in.txt").write_text(f"Hi !\n{PANIC_LINE}\n")
    expected = elmo.embed([tokenize(PANIC_LINE)], layers="top")[0]
    assert cli.main([str(tiny_package), str(tmp_path / "in.txt"), str(tmp_path / "out.npz"), "--format", "npz",
                     "--top", "-q"]) == 0
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["1"], expected)
    (chunk,), _ = plan_chunks(tmp_path / "in.txt")
    (tmp_path / "part").mkdir()
    worker = ChunkWorker(str(tiny_package), str(tmp_path / "part"), 1, RAY_SETTINGS, False)
    assert worker({k: [v] for k, v in chunk.to_dict().items()})["error"] == [""]
    table = pq.read_table(tmp_path / "part" / chunk.name)
    assert table.column("tokens").to_pylist()[1] == tokenize(PANIC_LINE)
