"""Conformance vectors in every package, `elmo-verify`, and the manifest fields the spec requires."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo_export.conformance import CONFORMANCE_TOLERANCES
from elmo_export.model import LstmState
from elmo_runtime import contract as C
from elmo_runtime.chars import BOS_CHAR_IDS, EOS_CHAR_IDS
from elmo_runtime.conformance import decode_array, encode_array, verify_package
from elmo_runtime.conformance import main as verify_main
from elmo_runtime.package import PackageError, load_manifest, sha256_of

SPEC = Path(__file__).resolve().parents[1] / "docs" / "package-format.md"


@pytest.fixture(scope="module")
def tiny_zero_package(exported):
    """The `tiny` architecture exported with initial_state="zero"."""
    return exported("tiny", "fp32", "zero")


def conformance_of(package) -> dict:
    return json.loads((Path(package) / C.CONFORMANCE_FILE).read_text(encoding="utf-8"))


def copy_of(package, tmp_path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "copy"))


def sentence(doc: dict, name: str) -> dict:
    return next(s for s in doc["sentences"] if s["name"] == name)


def test_every_package_carries_its_conformance_vectors(tiny_package, tiny_zero_package):
    warm, zero = conformance_of(tiny_package), conformance_of(tiny_zero_package)
    assert C.CONFORMANCE_FILE in load_manifest(tiny_package).files  # with its sha256, like the graphs
    assert warm["precision"] == "fp32" and warm["tolerance"] == {
        "max_abs": CONFORMANCE_TOLERANCES["fp32"].max_abs,
        "min_cosine": None,
    }
    assert all(set(s["expected"]) == {"zero", "warm"} for s in warm["sentences"])
    assert all(set(s["expected"]) == {"zero"} for s in zero["sentences"])
    lengths = {s["name"]: len(s["tokens"]) for s in warm["sentences"]}
    assert lengths["one token"] == 1 and lengths["sixty tokens"] == 60 and lengths["empty sentence"] == 0

    boundary = sentence(warm, "literal boundary tokens")
    assert boundary["tokens"][:4] == ["<S>", "The", "cat", "</S>"]
    assert boundary["char_ids"][0] == BOS_CHAR_IDS.tolist() and boundary["char_ids"][3] == EOS_CHAR_IDS.tolist()
    assert boundary["char_ids"][5][:5] == [259, ord("<") + 1, ord("s") + 1, ord(">") + 1, 260]  # <s>: plain bytes
    long = sentence(warm, "tokens over 48 bytes")
    assert long["char_ids"][1][1:50] == [b + 1 for b in ("a" + "€" * 16).encode()[:48]] + [260]  # cut mid-character
    assert sentence(warm, "4-byte UTF-8")["char_ids"][0][:6] == [259] + [b + 1 for b in "😀".encode()] + [260]
    unencodable = sentence(warm, "unencodable text")
    assert unencodable["tokens"][0] == "a\ud800b"  # the lone surrogate survives the JSON round trip
    assert unencodable["char_ids"][0][:4] == [259, ord("a") + 1, ord("b") + 1, 260]  # ... and is dropped
    assert unencodable["char_ids"][1] == sentence(warm, "empty-string token")["char_ids"][1]  # [bow, eow, pad...]
    assert decode_array(sentence(warm, "empty sentence")["expected"]["warm"], "x").shape == (3, 0, 32)


def test_expected_layers_are_the_reference_s_within_fp32_parity(tiny_package, tiny_model):
    doc, manifest = conformance_of(tiny_package), load_manifest(tiny_package)
    states = {
        "zero": tiny_model.zero_state(1),
        "warm": LstmState(torch.from_numpy(manifest.warm_h[:, :, None]), torch.from_numpy(manifest.warm_c[:, :, None])),
    }
    for s in doc["sentences"]:
        for mode, state in states.items():
            got = decode_array(s["expected"][mode], s["name"])
            if not s["tokens"]:
                continue
            with torch.no_grad():
                want = tiny_model(torch.tensor([s["char_ids"]], dtype=torch.int32), state).layers.numpy()[:, 0]
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{s['name']} ({mode})")
    # the two states give different vectors: the warm state is in the expected layers
    one = sentence(doc, "one token")["expected"]
    assert not np.allclose(decode_array(one["zero"], "z"), decode_array(one["warm"], "w"), atol=1e-3)


def test_elmo_verify_passes_on_a_sound_package(tiny_package, tiny_zero_package, capsys):
    assert verify_main([str(tiny_package)]) == 0
    assert verify_main([str(tiny_zero_package), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    # 9 sentences x 2 states x 3 layers (the empty sentence's checks are of its shape, (3, 0, 32)),
    # plus, in the default state (warm), the time-chunks case (3 layers) and the stream's 9 rows (x 3 layers)
    assert "conformance passed (fp32): 9 sentences, 84 layer checks" in out
    report = verify_package(tiny_package)
    assert report.passed and report.worst()["max_abs"] <= CONFORMANCE_TOLERANCES["fp32"].max_abs


def _rewrite(path: Path, edit) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    _reseal(path)


def _reseal(path: Path) -> None:
    """Record a changed file's new size and sha256 in the manifest (else loading stops at its size)."""
    manifest_file = path.parent / C.MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text())
    manifest["files"][path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    manifest_file.write_text(json.dumps(manifest))


def nudged_copy(package: Path, tmp_path: Path, where: tuple[int, int, int], by: float) -> Path:
    """A sealed copy of `package` (hashes match) whose expected layers of the sentence 'sixty
    tokens' (state warm) are off by `by` at `where` (layer, token, component)."""
    package = copy_of(package, tmp_path)

    def nudge(doc):
        entry = sentence(doc, "sixty tokens")["expected"]["warm"]
        layers = decode_array(entry, "x").copy()
        layers[where] += by
        entry.update(encode_array(layers))

    _rewrite(package / C.CONFORMANCE_FILE, nudge)
    return package


def test_elmo_verify_names_the_sentence_state_and_layer_that_differ(tiny_package, tmp_path, capsys):
    package = nudged_copy(tiny_package, tmp_path, (2, 17, 3), 0.01)
    assert verify_main([str(package)]) == 1
    err = capsys.readouterr().err
    assert "sentence 5 ('sixty tokens'), state warm, layer 2: max abs difference 0.01 > 0.0001" in err
    assert "layer 1" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "damage, message",
    [
        ("weights", "sentence 0 ('literal boundary tokens'), state zero, layer 1: "),
        ("truncated graph", f"file {C.BILM_FILE!r} has 100 bytes, the manifest says"),
        ("truncated vectors", f"file {C.CONFORMANCE_FILE!r} has 1000 bytes, the manifest says"),
        ("not json", "cannot read the conformance vectors"),
        (
            "bad base64",
            "sentence 3 ('tokens over 48 bytes'), state zero: expected layers: float32_base64 is not base64",
        ),
        ("wrong shape", "sentence 4 ('one token'), state warm: layers have shape [3, 1, 32], expected [3, 2, 32]"),
        ("wrong char ids", "sentence 1 ('multi-byte UTF-8'): char ids differ from the file's at token 2"),
        ("no manifest", "is not an elmo-onnx model package: it has no elmo.json"),
    ],
)
def test_elmo_verify_on_a_damaged_package_fails_without_a_traceback(tiny_package, tmp_path, capsys, damage, message):
    package = copy_of(tiny_package, tmp_path)
    vectors = package / C.CONFORMANCE_FILE
    if damage == "weights":
        data = package / (C.BILM_FILE + ".data")
        raw = bytearray(data.read_bytes())
        raw[: len(raw) // 2] = np.random.default_rng(0).bytes(len(raw) // 2)  # same size: only the sha256 tells
        data.write_bytes(bytes(raw))
    elif damage == "truncated graph":
        graph = package / C.BILM_FILE
        graph.write_bytes(graph.read_bytes()[:100])
    elif damage == "truncated vectors":
        vectors.write_text(vectors.read_text()[:1000])
    elif damage == "not json":
        vectors.write_text(vectors.read_text()[:1000])
        _reseal(vectors)
    elif damage == "bad base64":
        _rewrite(vectors, lambda d: d["sentences"][3]["expected"]["zero"].update(float32_base64="not base64!"))
    elif damage == "wrong shape":

        def two_tokens(doc):
            entry = doc["sentences"][4]["expected"]["warm"]
            entry.update(encode_array(np.repeat(decode_array(entry, "x"), 2, axis=1)))

        _rewrite(vectors, two_tokens)
    elif damage == "wrong char ids":
        _rewrite(vectors, lambda d: d["sentences"][1]["char_ids"][2].__setitem__(1, 7))
    elif damage == "no manifest":
        (package / C.MANIFEST_FILE).unlink()
    assert verify_main([str(package)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if damage == "weights":
        assert f"file '{C.BILM_FILE}.data': does not match its sha256 in the manifest (damaged)" in err


@pytest.mark.parametrize("field", C.REQUIRED_FIELDS)
def test_a_manifest_lacking_a_required_field_fails_to_load_naming_it(tiny_package, tmp_path, field):
    package = copy_of(tiny_package, tmp_path)
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    *parents, last = field.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    del node[last]
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=f"missing field '{field}'"):
        load_manifest(package)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("chars.scheme", "code_points", "chars.scheme is 'code_points'; this runtime implements 'bytes'"),
        ("chars.bytes.unencodable", "replace", "chars.bytes.unencodable is 'replace'"),
        ("chars.bytes.max_token_bytes", 30, "chars.bytes.max_token_bytes is 30; this runtime implements 48"),
        (
            "chars.max_characters_per_token",
            5000,
            "chars.max_characters_per_token is 5000; this runtime implements 3..1024",
        ),
        ("chars.bytes.special_tokens", {}, "chars.bytes.special_tokens is {}"),
        ("sentences.empty", "run", "sentences.empty is 'run'"),
        ("initial_state.directions", ["backward", "forward"], "initial_state.directions is ['backward', 'forward']"),
        ("format_version", 1, "format version 1 is older than this runtime reads (3); export the package again"),
        ("format_version", 2, "format version 2 is older than this runtime reads (3); export the package again"),
    ],
)
def test_a_package_this_runtime_would_misread_is_refused(tiny_package, tmp_path, field, value, message):
    package = copy_of(tiny_package, tmp_path)
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    *parents, last = field.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    node[last] = value
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError) as error:
        load_manifest(package)
    assert message in str(error.value)


def test_a_zero_state_package_with_nonzero_state_is_refused(tiny_zero_package, tmp_path):
    package = copy_of(tiny_zero_package, tmp_path)
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    manifest["initial_state"]["h"][1][0][3] = 0.5
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="initial_state.mode is 'zero' but initial_state.h/c are not all zeros"):
        load_manifest(package)


def test_the_spec_documents_every_required_field_and_rule():
    spec = SPEC.read_text(encoding="utf-8")
    for field in C.REQUIRED_FIELDS:
        assert f"`{field}`" in spec, field
    for value in [*C.SENTENCE_RULES.values(), C.CHAR_SCHEME, C.UNENCODABLE, C.CONFORMANCE_FILE]:
        assert f"`{value}`" in spec or f'"{value}"' in spec, value
    for key in C.char_constants()[C.CHAR_SCHEME]:
        assert f"`chars.bytes.{key}`" in spec, key
