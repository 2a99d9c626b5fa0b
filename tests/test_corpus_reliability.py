"""The corpus paths under hostile input (reliability review 2026-12): the tokenizer's bound and
its failures (M6), resumed Ray jobs that trust nothing (M3), and the low ones of the runtime."""

from pathlib import Path

import numpy as np
import pytest

from elmo_runtime.tokenize import MAX_RUN_CHARS, TokenizerError, tokenize

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
    assert tokens[:2] == [PANIC_LINE[: MAX_RUN_CHARS - 1], "."]  # the URL rule on the first piece, minus its period


def test_text_around_a_long_run_is_tokenized_as_without_the_cut():
    run = "x" * (3 * MAX_RUN_CHARS + 7)
    assert tokenize(f"Mr. Smith , Inc. {run} said it .") == (
        ["Mr.", "Smith", ",", "Inc."]
        + [run[i : i + MAX_RUN_CHARS] for i in range(0, len(run), MAX_RUN_CHARS)]
        + ["said", "it", "."]
    )
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
    assert err.startswith(
        f"elmo-embed: error: {tmp_path / 'in.txt'}:2: the tokenizer failed on this text (PanicException: "
    )
    assert err.count("\n") == 1
    assert not (tmp_path / "out.hdf5").exists()


def test_a_tokenizer_panic_in_a_ray_worker_is_one_line_naming_the_line(tiny_package, tmp_path, monkeypatch):
    """The worker function itself (no cluster): the chunk comes back as an error naming file and line."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.corpus.chunks import plan_chunks
    from elmo_runtime.corpus.job import ChunkWorker, _raise_chunk_error

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


RAY_SETTINGS = {
    "layers": "top",
    "pool": None,
    "dtype": "float32",
    "tokenized": False,
    "state": None,
    "batch_tokens": None,
}


def test_the_review_line_embeds_through_elmo_embed_and_a_ray_worker(elmo, tiny_package, tmp_path):
    """The 2.7 MB line that made both paths end in a traceback: embedded, as its pieces."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from elmo_runtime import cli
    from elmo_runtime.corpus.chunks import plan_chunks
    from elmo_runtime.corpus.job import ChunkWorker

    (tmp_path / "in.txt").write_text(f"Hi !\n{PANIC_LINE}\n")
    expected = elmo.embed([tokenize(PANIC_LINE)], layers="top")[0]
    assert (
        cli.main(
            [str(tiny_package), str(tmp_path / "in.txt"), str(tmp_path / "out.npz"), "--format", "npz", "--top", "-q"]
        )
        == 0
    )
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["1"], expected)
    (chunk,), _ = plan_chunks(tmp_path / "in.txt")
    (tmp_path / "part").mkdir()
    worker = ChunkWorker(str(tiny_package), str(tmp_path / "part"), 1, RAY_SETTINGS, False)
    assert worker({k: [v] for k, v in chunk.to_dict().items()})["error"] == [""]
    table = pq.read_table(tmp_path / "part" / chunk.name)
    assert table.column("tokens").to_pylist()[1] == tokenize(PANIC_LINE)


# -- M3: a resumed Ray job trusts nothing it finds in .OUTPUT.partial ---------------------------


def interrupted_job(package, input, output, chunk_rows: int, done: int):
    """What an interrupted `--engine ray` run leaves: the partial folder with its plan and the
    first `done` parts, written by the job's own worker function (called here, without a cluster)."""
    from elmo_runtime.corpus.job import ChunkWorker, _open_job, _plan_id
    from elmo_runtime.corpus.table import TableEmbedder

    embedder = TableEmbedder(package, device="cpu", threads=1, **RAY_SETTINGS)
    partial = output.parent / f".{output.name}.partial"
    plan, chunks = _open_job(embedder, package, input, output, partial, False, chunk_rows, False)
    worker = ChunkWorker(
        str(package), str(partial), 1, plan["settings"], False, True, _plan_id(plan), plan["package_sha256"]
    )
    for chunk in chunks[:done]:
        assert worker({k: [v] for k, v in chunk.to_dict().items()})["error"] == [""]
    return partial, plan, chunks


def numbered_lines(n: int) -> str:
    words = "the cat sat on a mat under tree".split()
    return "".join(f"{words[i % 8]} {words[(3 * i) % 8]} {i} .\n" for i in range(n))


def test_damaged_parts_are_embedded_again(tiny_package, tmp_path, caplog):
    """Cut in half, random bytes, a copy of the next part, one flipped bit: each part is checked
    against the digest recorded when it was written, and only the intact one is kept."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.corpus.job import _parts_to_do

    (tmp_path / "in.txt").write_text(numbered_lines(12))
    partial, plan, chunks = interrupted_job(tiny_package, tmp_path / "in.txt", tmp_path / "out", 2, done=5)
    parts = [partial / c.name for c in chunks]
    data = [p.read_bytes() if p.exists() else None for p in parts]
    parts[0].write_bytes(data[0][: len(data[0]) // 2])
    parts[1].write_bytes(np.random.default_rng(0).bytes(len(data[1])))
    parts[2].write_bytes(data[3])
    flipped = bytearray(data[4])
    flipped[len(flipped) // 2] ^= 1
    parts[4].write_bytes(bytes(flipped))
    todo = _parts_to_do(partial, chunks, plan)
    assert [c.name for c in todo] == [chunks[i].name for i in (0, 1, 2, 4, 5)]
    assert sorted(p.name for p in partial.glob("part-*")) == [chunks[3].name]
    assert parts[3].read_bytes() == data[3]
    said = {Path(r.getMessage().split(" ", 1)[0]): r.getMessage().split(" ", 1)[1] for r in caplog.records}
    assert (
        said[parts[0]] == f"has {len(data[0]) // 2} bytes, {len(data[0])} when it was written (cut short or "
        "replaced): embedding that chunk again"
    )
    sha_mismatch = "does not match the sha256 recorded when it was written (damaged or replaced)"
    assert said[parts[1]].startswith(sha_mismatch) and said[parts[4]].startswith(sha_mismatch)
    assert said[parts[2]].startswith(sha_mismatch if len(data[3]) == len(data[2]) else f"has {len(data[3])} bytes")
    assert len(said) == 4


def test_an_input_edited_between_runs_has_its_changed_chunks_embedded_again(tiny_package, tmp_path, caplog):
    """The same line count, other words in line 4: the part holding lines 3-4 is stale, the rest stays."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.corpus.job import ChunkWorker, _open_job, _parts_to_do, _plan_id
    from elmo_runtime.corpus.table import TableEmbedder

    source = tmp_path / "in.txt"
    source.write_text(numbered_lines(8))
    partial, plan, chunks = interrupted_job(tiny_package, source, tmp_path / "out", 2, done=3)
    lines = source.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("3", "three")
    source.write_text("".join(lines))
    embedder = TableEmbedder(tiny_package, device="cpu", threads=1, **RAY_SETTINGS)
    plan_now, chunks_now = _open_job(embedder, tiny_package, source, tmp_path / "out", partial, False, None, False)
    assert plan_now == plan  # the same plan: settings, package and layout
    todo = _parts_to_do(partial, chunks_now, plan_now)
    assert [c.first_id for c in todo] == [2, 6]
    assert any(f"lines 3..4 of {source} changed" in r.getMessage() for r in caplog.records)
    # A worker handed the old chunk (the file edited while the job ran) refuses to embed it.
    worker = ChunkWorker(
        str(tiny_package), str(partial), 1, plan["settings"], False, True, _plan_id(plan), plan["package_sha256"]
    )
    (error,) = worker({k: [v] for k, v in chunks[1].to_dict().items()})["error"]
    assert (
        error == f"InputError: {source}:3..4: these lines changed after the job was planned; run the command "
        "again once the input stays as it is"
    )


def test_a_package_replaced_at_its_path_is_refused(tiny_package, exported, tmp_path):
    """fp32 then int8 at the same path: the resumed run refuses (naming the package) instead of
    mixing two models' vectors; a worker that loads the new one refuses its chunks too."""
    pytest.importorskip("pyarrow")
    import shutil

    from elmo_runtime.corpus.job import ChunkWorker, embed_to_parquet

    package = tmp_path / "pkg"
    shutil.copytree(tiny_package, package)
    (tmp_path / "in.txt").write_text(numbered_lines(6))
    partial, plan, chunks = interrupted_job(package, tmp_path / "in.txt", tmp_path / "out", 2, done=1)
    shutil.rmtree(package)
    shutil.copytree(exported("tiny", "int8"), package)
    with pytest.raises(
        ValueError,
        match=rf"^{partial} holds an interrupted run, but the package {package} has "
        r"changed since \(another elmo.json: its vectors would mix\); pass --force",
    ):
        embed_to_parquet(package, tmp_path / "in.txt", tmp_path / "out", **RAY_SETTINGS)
    worker = ChunkWorker(str(package), str(partial), 1, plan["settings"], False, True, "", plan["package_sha256"])
    (error,) = worker({k: [v] for k, v in chunks[1].to_dict().items()})["error"]
    assert error.startswith(f"ValueError: {package} changed after this job was planned")
    assert sorted(p.name for p in partial.glob("part-*")) == [chunks[0].name]


@pytest.mark.ray
def test_a_resumed_ray_job_publishes_only_verified_parts(elmo, tiny_package, tmp_path):
    """Damaged parts left by an interrupted run, then the same command: the output reads, holds
    every id once with the right vectors, and its manifest has each part's sha256."""
    pq = pytest.importorskip("pyarrow.parquet")
    import hashlib
    import json
    import subprocess
    import sys

    from elmo_runtime.corpus.table import to_numpy

    (tmp_path / "in.txt").write_text(numbered_lines(40))
    partial, _, chunks = interrupted_job(tiny_package, tmp_path / "in.txt", tmp_path / "out", 8, done=4)
    first = partial / chunks[0].name
    first.write_bytes(first.read_bytes()[:100])
    (partial / chunks[1].name).write_bytes((partial / chunks[2].name).read_bytes())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(tiny_package),
            str(tmp_path / "in.txt"),
            str(tmp_path / "out"),
            "--top",
            "--engine",
            "ray",
            "--workers",
            "2",
            "--num-cpus",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and "2 of 5 parts done" in done.stderr
    table = pq.read_table(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(40))
    expected = elmo.embed(numbered_lines(40).splitlines(), layers="top")
    for id, vectors in zip(table.column("id").to_pylist(), to_numpy(table.column("vectors"))):
        np.testing.assert_array_equal(vectors, expected[id])
    manifest = json.loads((tmp_path / "out" / "_elmo.json").read_text())
    for part in manifest["parts"]:
        assert hashlib.sha256((tmp_path / "out" / part["file"]).read_bytes()).hexdigest() == part["sha256"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_elmo.json"] + [c.name for c in chunks]


# -- L1: every layer selection is bit-identical alone and batched -------------------------------


@pytest.mark.parametrize("layers", ["average", "weights"])
def test_mixed_layers_are_the_same_alone_and_batched(elmo, sizes, layers):
    if layers == "weights":
        layers = [0.2 + 0.1 * k for k in range(sizes.layers)]
    rng = np.random.default_rng(3)
    words = "the cat sat on a mat under tree quickly slowly , .".split()
    sentences = [[str(w) for w in rng.choice(words, size=int(rng.integers(1, 30)))] for _ in range(20)]
    for pool in (None, "mean"):
        alone = [elmo.embed([s], layers=layers, pool=pool)[0] for s in sentences]
        batched = elmo.embed(sentences, layers=layers, pool=pool, batch_tokens=4096)
        differ = [i for i, (a, b) in enumerate(zip(alone, batched)) if not np.array_equal(a, b)]
        assert differ == [], f"pool={pool}: {len(differ)} of {len(sentences)} differ"


@pytest.mark.parametrize("n_layers", [3, 4, 5])
def test_a_layer_mix_of_one_row_is_that_row_of_the_batched_mix(n_layers):
    """Any number of layers and any width: np.tensordot's BLAS call rounded a row differently
    alone and in a batch here for 4 and 5 layers and odd widths (all 64 rows of a batch differ);
    on the reviewer's CPU for the default model's 3 layers too (9.5e-7)."""
    from elmo_runtime.embedder import _layer_mix, _Options

    rng = np.random.default_rng(n_layers)
    for layers in ("average", list(rng.random(n_layers))):
        options = _Options(_layer_mix(layers, n_layers), None, "zero", 512, None)
        for batch, tokens, dim in ((5, 3, 7), (64, 13, 33), (3, 2, 5)):
            stacked = rng.standard_normal((n_layers, batch, tokens, dim)).astype(np.float32)  # (L + 1, B, T, dim)
            mixed = options.mix_layers(stacked)
            for b in range(batch):
                alone = options.mix_layers(np.ascontiguousarray(stacked[:, b : b + 1, : tokens - 1]))[0]
                np.testing.assert_array_equal(alone, mixed[b, : tokens - 1])


# -- L3, L4: crafted manifests and graphs are PackageErrors naming the file ----------------------


def package_copy(tiny_package, tmp_path):
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    return copy


def replace_listed_file(package, name: str, data: bytes | None = None, size: int | None = None) -> None:
    """Write `data` (or a sparse file of `size` bytes) as `name`, and list its size and sha256."""
    import hashlib
    import json

    path = package / name
    if data is not None:
        path.write_bytes(data)
    else:
        with open(path, "wb") as f:
            f.truncate(size)
    manifest = json.loads((package / "elmo.json").read_text())
    digest = hashlib.sha256(data).hexdigest() if data is not None else "0" * 64
    manifest["files"][name] = {"sha256": digest, "bytes": path.stat().st_size}
    (package / "elmo.json").write_text(json.dumps(manifest))


def nested_graphs(depth: int) -> bytes:
    """A ModelProto whose graph holds a node whose attribute holds a graph ... `depth` times."""

    def field(number: int, payload: bytes) -> bytes:
        size, out = len(payload), bytearray([number << 3 | 2])
        while size > 0x7F:
            out.append(size & 0x7F | 0x80)
            size >>= 7
        return bytes(out) + bytes([size]) + payload

    graph = b""
    for _ in range(depth):
        graph = field(1, field(5, field(6, graph)))  # GraphProto.node -> NodeProto.attribute -> AttributeProto.g
    return field(7, graph)


def test_deeply_nested_json_and_graphs_are_package_errors(tiny_package, tmp_path):
    import json

    from elmo_runtime import Elmo
    from elmo_runtime.conformance import ConformanceFileError, read_conformance
    from elmo_runtime.package import PackageError

    deep = tmp_path / "deep"
    deep.mkdir()
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    manifest_pkg = package_copy(tiny_package, deep)
    text = json.dumps(json.loads((manifest_pkg / "elmo.json").read_text()))
    (manifest_pkg / "elmo.json").write_text(text[:-1] + ', "extra": ' + deep_json.read_text() + "}")
    with pytest.raises(PackageError, match=r"elmo.json: not a valid JSON manifest \(nested too deeply\)$"):
        Elmo(manifest_pkg, device="cpu")
    with pytest.raises(ConformanceFileError, match=r"deep.json: cannot read the conformance vectors \(JSON nested "):
        read_conformance(deep_json)
    graph_pkg = package_copy(tiny_package, tmp_path)
    replace_listed_file(graph_pkg, "token_embedder.onnx", nested_graphs(3000))
    with pytest.raises(
        PackageError,
        match=r"graph file 'token_embedder.onnx' \(token_embedder\) is not a valid ONNX "
        r"file \(subgraphs nested more than 100 deep\)$",
    ):
        Elmo(graph_pkg, device="cpu")
    assert json.loads((graph_pkg / "elmo.json").read_text())  # the test's own manifest stays readable


def test_graphs_onnx_runtime_rejects_are_package_errors(tiny_package, tmp_path):
    """A 0-byte graph listed with its sha256: ONNX Runtime's InvalidArgument, now one PackageError."""
    from elmo_runtime import Elmo
    from elmo_runtime.package import PackageError

    package = package_copy(tiny_package, tmp_path)
    replace_listed_file(package, "bilm.onnx", b"")
    with pytest.raises(PackageError, match=r"bilm.onnx: ONNX Runtime cannot load this graph \("):
        Elmo(package, device="cpu")


def test_a_graph_over_2_gib_is_refused_before_it_is_read(tiny_package, tmp_path):
    """A sparse 2 GiB + 1 graph listed with its size, verify=False, under a 1.5 GB address cap:
    refused by its size (the scanner read the whole file: MemoryError)."""
    import subprocess
    import sys

    package = package_copy(tiny_package, tmp_path)
    replace_listed_file(package, "token_embedder.onnx", size=(2 << 30) + 1)
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000,) * 2)\n"
        "from elmo_runtime import Elmo\nfrom elmo_runtime.package import PackageError\n"
        "try:\n    Elmo(sys.argv[1], device='cpu', verify=False)\n"
        "except PackageError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(package)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(
        "is not a valid ONNX file (2147483649 bytes, over the 2 GiB that ONNX Runtime reads in a graph file)"
    )


# -- L8: the token cache never keeps huge tokens --------------------------------------------------


def test_long_tokens_are_embedded_but_not_cached(tiny_package):
    import tracemalloc

    from elmo_runtime import Elmo
    from elmo_runtime.token_cache import MAX_CACHED_TOKEN_CHARS

    cached, uncached = Elmo(tiny_package, device="cpu"), Elmo(tiny_package, device="cpu", token_cache=0)
    sentences = [["short", f"{i:05d}" + "x" * 20_000] for i in range(200)] + [["y" * MAX_CACHED_TOKEN_CHARS]]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        vectors = cached.embed(sentences, layers="top")
        kept = tracemalloc.get_traced_memory()[0] - before - sum(v.nbytes + 200 for v in vectors)
    finally:
        tracemalloc.stop()
    assert len(cached.token_cache) == 2  # "short" and the 64-character token
    assert kept < 1 << 20, f"{kept / 2**20:.1f} MB kept after embedding 200 tokens of 20 KB"  # they hold 4 MB
    for got, want in zip(vectors, uncached.embed(sentences, layers="top")):
        np.testing.assert_array_equal(got, want)


# -- L12: a bounded thread count ------------------------------------------------------------------


def test_a_huge_thread_count_is_refused_in_one_line(tiny_package, tmp_path):
    """--threads 20000 under a 4 GB address cap deadlocked ONNX Runtime (and ignored SIGTERM)."""
    import resource
    import subprocess
    import sys

    from elmo_runtime import Elmo
    from elmo_runtime.runner import max_threads

    with pytest.raises(ValueError, match=rf"^threads is {max_threads() + 1}; at most {max_threads()} \(4 per CPU"):
        Elmo(tiny_package, device="cpu", threads=max_threads() + 1)
    assert Elmo(tiny_package, device="cpu", threads=max_threads()).embed([["ok"]])[0].shape[1] == 1
    (tmp_path / "in.txt").write_text("The cat sat .\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(tiny_package),
            str(tmp_path / "in.txt"),
            str(tmp_path / "out.hdf5"),
            "--threads",
            "20000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30,) * 2),
    )
    assert (done.returncode, done.stderr) == (
        1,
        f"elmo-embed: error: threads is 20000; at most {max_threads()} (4 per "
        "CPU this process may use, at least 16): more threads than cores only "
        "wait for each other\n",
    )


# -- L14: a reader that goes away, a full disk ----------------------------------------------------


def test_elmo_verify_into_a_closed_pipe_exits_quietly(tiny_package):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "elmo_runtime.conformance", str(tiny_package), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # `| head -c 0`: the reader is gone before anything is written
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (141, "")


def test_parquet_on_a_full_disk_names_the_output(tiny_package, tmp_path):
    """RLIMIT_FSIZE stands for the full disk; the error was "Operation on closed file"."""
    pytest.importorskip("pyarrow")
    import resource
    import subprocess
    import sys

    (tmp_path / "in.txt").write_text(numbered_lines(3000))
    out = tmp_path / "out.parquet"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elmo_runtime.cli",
            str(tiny_package),
            str(tmp_path / "in.txt"),
            str(out),
            "--format",
            "parquet",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000,) * 2),
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"elmo-embed: error: cannot write {out}: ") and "File too large" in done.stderr
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
