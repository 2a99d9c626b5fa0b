"""`elmo-export`: arguments map onto `export`, model lookup (`sources.resolve`), summary, exit codes."""

import json
import shutil
import threading
from pathlib import Path

import pytest

from elmo_export import cli, parity
from elmo_export.cli import EXIT_OK, EXIT_PARITY, EXIT_USAGE, main
from elmo_export.sources import ModelSourceError, base, official, resolve
from elmo_runtime import contract as C
from elmo_runtime.compare import Tolerance


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
    for option in (
        "MODEL",
        "--options",
        "--weights",
        "-o OUT",
        "--quantize",
        "{fp32,fp16,int8,int4}",
        "--initial-state",
        "{warm,zero}",
        "--opset",
        "--force",
        "--no-progress",
        "exit codes",
    ):
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
    monkeypatch.setattr(
        "elmo_export.exporter.export", lambda model, out, **k: seen.update(model=model, out=out, kwargs=k) or out
    )
    monkeypatch.setattr(cli, "summary", lambda package, seconds: "summary")
    options, weights = tiny_weights
    code = main(
        [
            "--options",
            str(options),
            "--weights",
            str(weights),
            "-o",
            str(tmp_path / "x"),
            "--quantize",
            "int4",
            "--initial-state",
            "zero",
            "--opset",
            "18",
            "--force",
            "--no-progress",
            "--exact-activations",
        ]
    )
    assert code == EXIT_OK
    assert seen["model"].files == (Path(options), Path(weights)) and seen["out"] == tmp_path / "x"
    stop = seen["kwargs"].pop("stop")  # the CLI's signal event, unset: no signal came
    assert isinstance(stop, threading.Event) and not stop.is_set()
    assert seen["kwargs"] == {
        "precision": "int4",
        "initial_state": "zero",
        "opset": 18,
        "force": True,
        "progress": False,
        "calibration": None,
        "exact_activations": True,
    }
    # fp32 has one name; "none" is accepted as its alias; --precision is --quantize's other name.
    files = ["--options", str(options), "--weights", str(weights), "-o", str(tmp_path / "x")]
    assert main([*files, "--quantize", "none"]) == 0
    assert seen["kwargs"]["precision"] == "fp32" and seen["kwargs"]["exact_activations"] is False  # off by default
    assert main([*files, "--precision", "int8"]) == 0
    assert seen["kwargs"]["precision"] == "int8"


def test_the_library_exports_any_form_with_typed_settings(model_dir, tmp_path):
    import elmo_export
    from elmo_export import Int8Settings, export

    assert set(elmo_export.__all__) >= {
        "export",
        "export_package",
        "ExportSettings",
        "Fp32Settings",
        "Fp16Settings",
        "Int8Settings",
        "Int4Settings",
        "ParityError",
    }
    package = export(
        str(model_dir),
        tmp_path / "pkg",
        precision=Int8Settings(per_channel=False),
        initial_state="zero",
        progress=False,
    )
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    assert manifest["precision"]["name"] == "int8" and manifest["precision"]["per_channel"] is False
    assert manifest["source"]["weights_file"] == "elmo_tiny_weights.hdf5"
    with pytest.raises(ModelSourceError, match="give either MODEL"):
        export(str(model_dir), tmp_path / "other", options=model_dir / "options.json", weights=model_dir / "x.hdf5")
    with pytest.raises(ValueError, match="precision is 'int3'"):  # settings first: before any download
        export("small", tmp_path / "other", precision="int3")


def test_importing_the_exporter_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, elmo_export, elmo_export.cli, elmo_export.sources.official as o; o.load_catalog(); "
        "heavy = [m for m in ('torch', 'onnx', 'h5py') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_model_directory_must_hold_options_and_one_weights_file(model_dir):
    (model_dir / "softmax.hdf5").write_bytes(b"")  # a training run's extra file: *weights.hdf5 wins
    assert resolve(str(model_dir)).files == (model_dir / "options.json", model_dir / "elmo_tiny_weights.hdf5")
    (model_dir / "other_weights.hdf5").write_bytes(b"")
    with pytest.raises(
        ModelSourceError, match=r"exactly one weights \.hdf5 file, found 3 \.hdf5 files.*other_weights\.hdf5"
    ):
        resolve(str(model_dir))
    for f in model_dir.glob("*.hdf5"):
        f.unlink()
    with pytest.raises(ModelSourceError, match=r"found no \.hdf5 file \(all files: options\.json\)"):
        resolve(str(model_dir))
    (model_dir / "options.json").unlink()
    with pytest.raises(ModelSourceError, match="has no options.json"):
        resolve(str(model_dir))


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
    monkeypatch.setitem(parity.PARITY_TOLERANCES, "fp16", Tolerance(min_cosine=1.01))
    out = tmp_path / "pkg"
    assert main([str(model_dir), "-o", str(out), "--quantize", "fp16", "-q", "--no-progress"]) == EXIT_PARITY
    err = capsys.readouterr().err
    assert "fails parity" in err and "min cosine" in err and "FAILED" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_without_a_default_model_it_says_so_and_how_to_pass_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(base, "MODELS_DIRS", (tmp_path / "installed", tmp_path / "models"))
    assert main(["-o", str(tmp_path / "pkg"), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "there is no default model yet" in err
    assert "--options FILE --weights FILE" in err


def test_the_default_model_is_models_default(model_dir, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(model_dir, models / "default-test")
    monkeypatch.setattr(base, "MODELS_DIRS", (tmp_path / "installed", models))
    default = models / "default-test"
    assert resolve().files == (default / "options.json", default / "elmo_tiny_weights.hdf5")
    shutil.copytree(model_dir, models / "default-other")
    with pytest.raises(ModelSourceError, match="several default models"):
        resolve()


def test_an_official_name_is_fetched(tiny_weights, monkeypatch):
    name = next(iter(official.load_catalog()))
    fetched = []
    monkeypatch.setattr(official, "fetch_model", lambda entry, **k: fetched.append(entry.name) or tiny_weights)
    source = resolve(name, progress=False)
    assert source.files == tuple(Path(p) for p in tiny_weights)
    assert fetched == [name]
    assert source.license == official.get_model(name).license  # for a model card
    with pytest.raises(ModelSourceError, match="nor is it an official model name.*known models"):
        resolve("not-a-model")


@pytest.mark.parametrize("catalog", ["catalog.json", "archives.json"])
def test_a_broken_catalog_is_an_error_that_names_the_file(catalog, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("catalog.json", "archives.json"):
        shutil.copy(Path(base.MODELS_DIRS[1]) / name, models / name)
    (models / catalog).write_text('{"schema_version": 1, "models": {"x": ', encoding="utf-8")
    monkeypatch.setattr(base, "MODELS_DIRS", (tmp_path / "installed", models))
    with pytest.raises(ValueError, match=f"{models / catalog}: not a valid JSON") as failed:
        resolve("not-a-model")
    assert not isinstance(failed.value, ModelSourceError)  # not "no such model"
    assert main(["not-a-model", "-o", str(tmp_path / "out"), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(models / catalog) in err and "no such model" not in err
    (models / catalog).unlink()
    with pytest.raises(
        FileNotFoundError, match=f"looked for {tmp_path / 'installed' / catalog} and {models / catalog}"
    ):
        resolve("not-a-model")


def test_without_torch_it_says_in_one_line_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # as on a base install: torch cannot be found
    assert main(["-o", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "needs torch" in err
        and 'pip install torch==2.13.0 && pip install "elmo-onnx[export]"' in err
    )
    assert not (tmp_path / "out").exists()
