"""A weights file must hold its own bytes: `elmo-export` never reads another file through HDF5.

HDF5 lets a dataset keep its data in other files: external raw storage (`external=`), an
external link, a virtual dataset; a soft link can lead to an external link. A crafted
`weights.hdf5` could so copy any readable file (a secret, `/proc/self/environ`) into an exported
package. Each test crafts such a file with h5py from the synthetic tiny model, and checks that the
export refuses it in one line naming the dataset, that nothing reaches OUT, and that the secret
appears in no file written. A dataset declared but never written (a 21 kB file asking for GBs)
is refused the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from elmo_export import export_package
from elmo_export.cli import EXIT_USAGE
from elmo_export.model import ElmoOptions
from elmo_export.weights import WeightFileError, check_weight_file

SECRET = b"HF_TOKEN=hf_FAKEtokenFORstorageTEST"
TARGET = "char_embed"


def copy_except(source: Path, dest: Path, skip: str) -> None:
    """Every dataset of `source` into `dest`, except `skip` (the caller writes that one)."""
    with h5py.File(source, "r") as fin, h5py.File(dest, "w") as fout:

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and name != skip:
                fout.create_dataset(name, data=obj[...])

        fin.visititems(copy)


@pytest.fixture
def crafted(tmp_path, tiny_weights):
    """`crafted(how)`: a model folder whose `char_embed` lives outside `weights.hdf5`."""
    options, weights = tiny_weights
    with h5py.File(weights, "r") as f:
        real = f[TARGET][...]

    def make(how: str) -> Path:
        model = tmp_path / f"model-{how}"
        model.mkdir()
        shutil.copy(options, model / "options.json")
        secret = tmp_path / "secret.txt"
        secret.write_bytes(SECRET.ljust(real.nbytes, b"#"))  # exactly one dataset's bytes
        path = model / "weights.hdf5"
        copy_except(weights, path, TARGET)
        with h5py.File(path, "a") as f:
            if how == "external-storage":
                f.create_dataset(TARGET, shape=real.shape, dtype=real.dtype, external=[(str(secret), 0, real.nbytes)])
            elif how == "external-link":
                other = tmp_path / "other.hdf5"
                with h5py.File(other, "w") as o:
                    stolen = np.frombuffer(secret.read_bytes(), dtype=real.dtype).reshape(real.shape)
                    o.create_dataset("stolen", data=stolen)
                f[TARGET] = h5py.ExternalLink(str(other), "/stolen")
            elif how == "soft-to-external-link":
                other = tmp_path / "other2.hdf5"
                with h5py.File(other, "w") as o:
                    o.create_dataset("stolen", data=real)
                f["elsewhere"] = h5py.ExternalLink(str(other), "/stolen")
                f[TARGET] = h5py.SoftLink("/elsewhere")
            elif how == "virtual":
                other = tmp_path / "other3.hdf5"
                with h5py.File(other, "w") as o:
                    o.create_dataset("stolen", data=real)
                layout = h5py.VirtualLayout(shape=real.shape, dtype=real.dtype)
                layout[...] = h5py.VirtualSource(str(other), "stolen", shape=real.shape)
                f.create_virtual_dataset(TARGET, layout)
            elif how == "unwritten":
                f.create_dataset(TARGET, shape=real.shape, dtype=real.dtype, chunks=real.shape)
            else:
                raise AssertionError(how)
        return model

    return make


def files_hold(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize(
    "how, says",
    [
        ("external-storage", "keeps its bytes in external file(s)"),
        ("external-link", "is an HDF5 external link to '/stolen'"),
        ("soft-to-external-link", "is an HDF5 external link to '/stolen'"),
        ("virtual", "is a virtual dataset mapping"),
        ("unwritten", "declares"),
    ],
)
def test_a_dataset_stored_outside_the_weights_file_is_refused(crafted, tmp_path, how, says):
    model = crafted(how)
    out = tmp_path / "out"
    with pytest.raises(WeightFileError) as refused:
        export_package(model / "options.json", model / "weights.hdf5", out, progress=False)
    message = str(refused.value)
    assert f"dataset '{TARGET}' {says}" in message and "must hold its own data" in message
    assert "\n" not in message  # one line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no staging left
    planted = {tmp_path / "secret.txt"} | ({tmp_path / "other.hdf5"} if how == "external-link" else set())
    assert set(files_hold(tmp_path, SECRET)) == planted  # no file the export wrote holds the secret


def test_the_command_line_refuses_external_storage_with_exit_2_and_writes_nothing(crafted, tmp_path):
    model = crafted("external-storage")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "elmo_export.cli", str(model), "-o", str(out), "-q", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"dataset '{TARGET}' keeps its bytes in external file(s) '{tmp_path / 'secret.txt'}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
    assert files_hold(tmp_path, SECRET) == [tmp_path / "secret.txt"]


def test_a_soft_link_inside_the_file_is_still_accepted_and_a_dangling_one_is_named(tiny_weights, tmp_path):
    options, weights = tiny_weights
    path = tmp_path / "weights.hdf5"
    copy_except(weights, path, TARGET)
    with h5py.File(weights, "r") as f, h5py.File(path, "a") as g:
        g.create_dataset("kept/here", data=f[TARGET][...])
        g[TARGET] = h5py.SoftLink("/kept/here")
    check_weight_file(ElmoOptions.from_file(options), path)  # a link within the file reads the file only
    with h5py.File(path, "a") as g:
        del g["kept/here"]
    with pytest.raises(WeightFileError, match="dataset 'char_embed' is a soft link to '/kept/here', which does not"):
        check_weight_file(ElmoOptions.from_file(options), path)


# --- L7: a model ZIP is extracted only as far as its model files, within a bound -------------


def test_a_model_zip_extracts_only_model_files_and_refuses_a_bomb(tmp_path, monkeypatch):
    import tempfile
    import zipfile

    from elmo_export.sources import archives
    from elmo_export.synthetic import write_nlpl_zip

    model_zip = write_nlpl_zip("tiny", tmp_path / "model.zip")
    with zipfile.ZipFile(model_zip, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("junk.bin", bytes(64 << 20))  # 64 MiB of zeros: about 64 kB in the ZIP
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_dir))
    extracted = []  # what the loader finds in the temporary directory, while it is there
    find_model = archives.directory_loader
    monkeypatch.setattr(
        archives, "directory_loader", lambda d: extracted.append(sorted(p.name for p in d.iterdir())) or find_model(d)
    )
    model, source = archives.archive_loader(model_zip)()
    assert extracted == [["meta.json", "model.hdf5", "options.json", "vocab.txt"]]
    assert source["archive"]["file"] == "model.zip"
    assert list(scratch_dir.iterdir()) == []  # the extracted files are gone once loaded

    bomb = write_nlpl_zip("tiny", tmp_path / "bomb.zip")
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", bytes(200 << 20))  # a model-like name, 200 MiB unpacked
    with pytest.raises(
        ValueError,
        match=r"bomb.zip: its model files would take \d+ bytes unpacked \('notes.txt' alone "
        rf"{200 << 20}\), more than 4 times the archive; refusing",
    ):
        archives.archive_loader(bomb)()
    assert list(scratch_dir.iterdir()) == []  # nothing left, and nothing of the 200 MiB was written
