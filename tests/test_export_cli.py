"""`elmo-export`: arguments map onto `export_package`, model lookup, summary, exit codes."""

import json
import shutil
import threading
from pathlib import Path

import pytest

from elmo_export import catalog, cli, parity
from elmo_export.cli import EXIT_OK, EXIT_PARITY, EXIT_USAGE, main
from elmo_export.sources import ModelSourceError, resolve_model
from elmo_export.parity import Tolerance
from elmo_runtime import contract as C


@pytest.fixture
def model_dir(tmp_path, tiny_weights):
    """A model directory as a user has it: options.json + one weights file."""
    directory = tmp_path / "model"
    directory.mkdir()
    shutil.copy(tiny_weights[0], directory / "options.json")
    shutil.copy(tiny_weights[1], directory / "elmo_tiny_weights.hdf5")
    return directory


def test_help_explains_every_option_with_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("MODEL", "--options", "--weights", "-o OUT", "--quantize", "{fp32,fp16,int8,int4}",
                   "--initial-state", "{warm,zero}", "--opset", "--force", "--no-progress", "exit codes"):
        assert option in text
    assert "examples:" in text and "elmo-export path/to/model -o" in text


def test_exports_a_model_directory_and_prints_a_summary(model_dir, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert main([str(model_dir), "-o", str(out), "--quantize", "int8", "--no-progress", "-q"]) == EXIT_OK
    manifest = json.loads((out / C.MANIFEST_FILE).read_text())
    assert manifest["precision"]["name"] == "int8" and manifest["initial_state"]["mode"] == "warm"
    assert manifest["source"]["weights_file"] == "elmo_tiny_weights.hdf5"
    text = capsys.readouterr().out
    assert f"exported {out} (int8, warm initial state, opset" in text
    for name in (C.TOKEN_EMBEDDER_FILE, C.BILM_FILE, C.MANIFEST_FILE, "total", "mean cos", "PASSED"):
        assert name in text


def test_options_and_weights_flags_map_onto_the_library(tiny_weights, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("elmo_export.export.export_package", lambda *a, **k: seen.update(args=a, kwargs=k) or a[2])
    monkeypatch.setattr(cli, "summary", lambda package, seconds: "summary")
    options, weights = tiny_weights
    code = main(["--options", str(options), "--weights", str(weights), "-o", str(tmp_path / "x"), "--quantize", "int4",
                 "--initial-state", "zero", "--opset", "18", "--force", "--no-progress"])
    assert code == EXIT_OK
    assert seen["args"] == (Path(options), Path(weights), tmp_path / "x")
    stop = seen["kwargs"].pop("stop")  # the CLI's signal event, unset: no signal came
    assert isinstance(stop, threading.Event) and not stop.is_set()
    assert seen["kwargs"] == {"quantize": "int4", "initial_state": "zero", "opset": 18, "force": True, "progress": False,
                              "calibration": None}
    # fp32 has one name; "none" is accepted as its alias.
    assert main(["--options", str(options), "--weights", str(weights), "-o", str(tmp_path / "x"), "--quantize", "none"]) == 0
    assert seen["kwargs"]["quantize"] == "fp32"


def test_a_model_directory_must_hold_options_and_one_weights_file(model_dir):
    (model_dir / "softmax.hdf5").write_bytes(b"")  # a training run's extra file: *weights.hdf5 wins
    assert resolve_model(str(model_dir)) == (model_dir / "options.json", model_dir / "elmo_tiny_weights.hdf5")
    (model_dir / "other_weights.hdf5").write_bytes(b"")
    with pytest.raises(ModelSourceError, match=r"exactly one weights \.hdf5 file, found 3 \.hdf5 files.*other_weights\.hdf5"):
        resolve_model(str(model_dir))
    for f in model_dir.glob("*.hdf5"):
        f.unlink()
    with pytest.raises(ModelSourceError, match=r"found no \.hdf5 file \(all files: options\.json\)"):
        resolve_model(str(model_dir))
    (model_dir / "options.json").unlink()
    with pytest.raises(ModelSourceError, match="has no options.json"):
        resolve_model(str(model_dir))


def test_bad_model_arguments_exit_2_with_a_clear_message(model_dir, tmp_path, capsys):
    out = str(tmp_path / "pkg")
    cases = [
        ([str(model_dir), "--options", "o.json", "--weights", "w.hdf5"], "not both"),
        (["--options", str(model_dir / "options.json")], "go together"),
        ([str(model_dir / "options.json")], "is a file, not a model directory"),
        (["no-such-model-or-dir"], "no such model directory: no-such-model-or-dir"),
    ]
    for args, message in cases:
        assert main([*args, "-o", out, "--no-progress", "-q"]) == EXIT_USAGE
        assert message in capsys.readouterr().err
    assert not Path(out).exists()


def test_missing_and_mismatched_files_exit_2(tiny_weights, tmp_path, capsys):
    options, weights = tiny_weights
    out = str(tmp_path / "pkg")
    assert main(["--options", str(options), "--weights", str(tmp_path / "gone.hdf5"), "-o", out, "-q"]) == EXIT_USAGE
    assert "weights file not found" in capsys.readouterr().err
    wrong = tmp_path / "options.json"
    data = json.loads(Path(options).read_text())
    data["lstm"]["projection_dim"] = 8
    wrong.write_text(json.dumps(data))
    assert main(["--options", str(wrong), "--weights", str(weights), "-o", out, "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "does not match" in err and "CNN_proj/W_proj" in err
    assert not Path(out).exists()


def test_an_existing_output_needs_force_and_an_unwritable_one_exits_2(model_dir, tiny_package, tmp_path, capsys):
    out = tmp_path / "pkg"
    shutil.copytree(tiny_package, out)
    assert main([str(model_dir), "-o", str(out), "-q", "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert main([str(model_dir), "-o", str(out), "-q", "--no-progress", "--force"]) == EXIT_OK
    assert json.loads((out / C.MANIFEST_FILE).read_text())["format_version"] == C.FORMAT_VERSION

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([str(model_dir), "-o", str(blocker / "pkg"), "-q"]) == EXIT_USAGE
    assert "cannot write the package" in capsys.readouterr().err


def test_a_parity_failure_exits_1_and_leaves_nothing(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(parity.TOLERANCES, "fp16", Tolerance(min_cosine=1.01))
    out = tmp_path / "pkg"
    assert main([str(model_dir), "-o", str(out), "--quantize", "fp16", "-q", "--no-progress"]) == EXIT_PARITY
    err = capsys.readouterr().err
    assert "fails parity" in err and "min cosine" in err and "FAILED" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_without_a_default_model_it_says_so_and_how_to_pass_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "MODELS_DIRS", (tmp_path / "installed", tmp_path / "models"))
    assert main(["-o", str(tmp_path / "pkg"), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "there is no default model yet" in err
    assert "--options FILE --weights FILE" in err


def test_the_default_model_is_models_default(model_dir, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(model_dir, models / "default-test")
    monkeypatch.setattr(catalog, "MODELS_DIRS", (tmp_path / "installed", models))
    assert resolve_model() == (models / "default-test" / "options.json", models / "default-test" / "elmo_tiny_weights.hdf5")
    shutil.copytree(model_dir, models / "default-other")
    with pytest.raises(ModelSourceError, match="several default models"):
        resolve_model()


def test_an_official_name_is_fetched(tiny_weights, monkeypatch):
    from elmo_export import download

    name = next(iter(catalog.load_catalog()))
    fetched = []
    monkeypatch.setattr(download, "fetch_model", lambda n, **k: fetched.append(n) or tiny_weights)
    assert resolve_model(name, progress=False) == tuple(Path(p) for p in tiny_weights)
    assert fetched == [name]
    with pytest.raises(ModelSourceError, match="nor is it an official model name.*known models"):
        resolve_model("not-a-model")


def test_without_torch_it_says_in_one_line_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # as on a base install: torch cannot be found
    assert main(["-o", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs torch" in err and 'pip install torch==2.13.0 && pip install "elmo-onnx[export]"' in err
    assert not (tmp_path / "out").exists()
