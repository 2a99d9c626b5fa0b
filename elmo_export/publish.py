"""Publish a verified package: to the Hugging Face Hub with a model card, or as a catalog archive.

Only a package that verifies is published: every file matches its manifest's sha256 and the
manifest holds a passed parity report (an export that failed parity never exists, but a package
edited by hand might). Nothing here imports torch: a package exported on one machine can be
published from another.

    push_to_hub("elmo-int8", "me/elmo-default-int8", license=SourceLicense.from_model_dir(...))
    archive_package("elmo-int8", "default-int8.zip", url="https://example.org/default-int8.zip")

The Hub side is `huggingface_hub` (`HF_ENDPOINT`, `HF_TOKEN` as usual); the model card is the
repository's README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from elmo_export.sources.base import Loader
from elmo_runtime import contract as C
from elmo_runtime.fetch.catalog import SHIPPED_NAME, check_entry
from elmo_runtime.fetch.hub import endpoint as hub_endpoint
from elmo_runtime.fetch.hub import parse_repo
from elmo_runtime.package import load_manifest

log = logging.getLogger(__name__)

MODEL_CARD = "README.md"
# Licence ids the Hub's model card metadata knows, by the SPDX id the catalog uses.
_HUB_LICENSES = {"apache-2.0": "apache-2.0", "mit": "mit", "cc-by-4.0": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0"}


@dataclass(frozen=True)
class SourceLicense:
    """The licence of the weights a package was exported from (what its users must honour)."""

    name: str  # an SPDX id ("Apache-2.0") or a name ("WordNet 3.0 License")
    text: str | None = None  # the full text, for a licence without a well-known id
    url: str | None = None

    @property
    def hub_id(self) -> str:
        """The Hub's metadata id: a known one, else "other" (the name then goes in `license_name`)."""
        return _HUB_LICENSES.get(self.name.lower(), "other")

    @classmethod
    def from_model_dir(cls, directory: str | Path) -> "SourceLicense | None":
        """The one `LICENSE*` file of a model folder (e.g. `models/default-wordnet/LICENSE.wordnet`).

        Returns None when the folder holds none, or several.
        """
        found = sorted(p for p in Path(directory).glob("LICENSE*") if p.is_file())
        if len(found) != 1:
            return None
        return cls(
            name=f"the terms of {found[0].name}, reproduced below", text=found[0].read_text(encoding="utf-8").strip()
        )

    @classmethod
    def of(cls, source: Loader, given: str | None = None) -> "SourceLicense":
        """The licence of the weights `source` loads: `given` (a name), else the one its catalog
        states (official models), else its model folder's one `LICENSE*` file.

        Raises:
            ValueError: none given and none found (what to pass is said).
        """
        if given:
            return cls(given)
        if source.license:
            return cls(source.license, url=source.license_url)
        found = cls.from_model_dir(source.folder) if source.folder is not None else None
        if found is None:
            where = (
                f"{source.folder} holds no single LICENSE* file"
                if source.folder is not None
                else f"{source.description} states none (ELMoForManyLangs and NLPL models do not)"
            )
            raise ValueError(
                f"--push-to-hub needs the licence of the source weights: {where}; pass --license NAME "
                "(an SPDX id such as Apache-2.0)"
            )
        return found


def verified_manifest(package: str | Path) -> dict:
    """The manifest of a package whose files match their sha256s and whose parity passed
    (`load_manifest` refuses any other).

    Raises:
        FileNotFoundError, PackageError: no package, a file that does not match, or no passed
            parity report.
    """
    return load_manifest(package, verify_files=True).to_json()


def _parity_table(parity: dict) -> str:
    rows = ["| state | layer | max abs | mean cosine | min cosine |", "| --- | ---: | ---: | ---: | ---: |"]
    for mode in parity["modes"]:
        for layer in mode["layers"]:
            rows.append(
                f"| {mode['mode']} | {layer['layer']} | {layer['max_abs']:.2e} | "
                f"{layer['mean_cosine']:.6f} | {layer['min_cosine']:.6f} |"
            )
    bars = ", ".join(
        f"{k} {'<=' if k == 'max_abs' else '>='} {v:g}" for k, v in parity["tolerance"].items() if v is not None
    )
    return "\n".join(rows) + f"\n\nTolerance for {parity['precision']}: {bars}: passed."


def _source_line(source: dict) -> str:
    """The source weights in one table cell: bilm-tf's HDF5 file, or another family's files."""
    if "weights_file" in source:
        line = f"{source.get('weights_file')} (sha256 {source.get('weights_sha256')})"
    else:  # ELMoForManyLangs (elmo_export.sources.manylangs): each file's sha256 is in elmo.json's `source`
        line = f"{source.get('format', 'unknown')}: {', '.join(source.get('files', {}))} (sha256 of each in elmo.json)"
    archive = source.get("archive")
    if isinstance(archive, dict):
        line += f", from {archive.get('file')} (sha256 {archive.get('sha256')})"
    return line


def _card_metadata(license: SourceLicense, precision: str) -> list[str]:
    """The model card's YAML header: library, licence, tags."""
    meta = ["---", "library_name: elmo-onnx", f"license: {license.hub_id}"]
    if license.hub_id == "other":
        meta.append(f"license_name: {json.dumps(license.name)}")
    return meta + ["tags:", "- elmo", "- onnx", f"- {precision}", "---", ""]


def _architecture_table(manifest: dict) -> list[str]:
    """The model card's table of what the package is: architecture, precision, size, source."""
    lstm, cnn = manifest["architecture"]["lstm"], manifest["architecture"]["char_cnn"]
    files = manifest["files"]
    return [
        "| | |",
        "| --- | --- |",
        f"| LSTM | {lstm['n_layers']} layers x 2 directions, {lstm['dim']} cells, "
        f"projection {lstm['projection_dim']} |",
        f"| output | {lstm['n_layers'] + 1} layers of {2 * lstm['projection_dim']}-dimensional vectors |",
        f"| char CNN | {sum(f[1] for f in cnn['filters'])} filters of widths "
        f"{', '.join(str(f[0]) for f in cnn['filters'])}, {cnn['n_highway']} highway layer(s) |",
        f"| precision | {manifest['precision']['name']} ({json.dumps(manifest['precision'])}) |",
        f"| initial state | {manifest['initial_state']['mode']} |",
        f"| ONNX opset | {manifest['opset']} |",
        f"| size | {sum(e['bytes'] for e in files.values()) / 1e6:.2f} MB ({', '.join(files)}, {C.MANIFEST_FILE}) |",
        f"| source weights | {_source_line(manifest.get('source', {}))} |",
    ]


def model_card(manifest: dict, repo_id: str, license: SourceLicense) -> str:
    """The README.md of a published package: metadata, what it is, how to use it, its parity."""
    lstm = manifest["architecture"]["lstm"]
    precision = manifest["precision"]["name"]
    parity = manifest["parity"]
    meta = _card_metadata(license, precision)
    source = manifest.get("source", {})
    pretokenized = manifest.get("input", {}).get("tokenization") == "pretokenized"
    example = (
        'vectors = elmo.embed([["The", "cat", "sat", "."]])   # token lists: the model expects its own tokenization'
        if pretokenized
        else 'vectors = elmo.embed(["The cat sat on the mat."])   # (layers, tokens, dim) per sentence'
    )
    licence_lines = [
        f"The weights this package was exported from are under: **{license.name}**"
        + (f" ({license.url})" if license.url else "")
        + ". Its terms apply to this package."
    ]
    if license.text:
        licence_lines += ["", "```text", license.text, "```"]
    body = [
        f"# {repo_id.split('/')[-1]}: an ELMo model package for elmo-onnx ({precision})",
        "",
        "A contextual word-vector model (ELMo: a character CNN with highway layers feeding a "
        f"{lstm['n_layers']}-layer bidirectional LSTM with projection) exported to ONNX by elmo-onnx "
        f"{manifest['producer']['version']}. It runs with numpy, onnxruntime and tokenizers; no torch.",
        "",
        "```python",
        "from elmo_runtime import Elmo",
        f'elmo = Elmo("hf:{repo_id}")',
        example,
        "```",
        "",
        f"or `elmo-embed hf:{repo_id} sentences.txt vectors.hdf5{' --tokenized' if pretokenized else ''}`."
        + (f" Input: {manifest['input'].get('expects', 'pre-tokenized')}." if pretokenized else ""),
        "",
        "## Architecture",
        "",
        *_architecture_table(manifest),
        "",
        "## Parity with the reference",
        "",
        f"Checked at export in ONNX Runtime (CPU) against elmo-onnx's PyTorch reference, which reproduces "
        f"{'ELMoForManyLangs' if source.get('format') == 'elmoformanylangs' else 'the original TensorFlow ELMo'}, "
        f"on {parity['sentences']} sentences ({parity['tokens']} tokens, "
        f"batches of {parity['batch_size']}), with the zero, the warm and a carried state:",
        "",
        _parity_table(parity),
        "",
        "## Licence",
        "",
        *licence_lines,
        "",
    ]
    return "\n".join(meta + body)


def push_to_hub(
    package: str | Path,
    repo_id: str,
    *,
    license: SourceLicense,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a verified package and its model card to a Hub repository (created if needed).

    Args:
        package: the package folder.
        repo_id: "owner/repo" (a revision is not accepted: uploads go to the main branch).
        license: the licence of the source weights, for the model card.
        private: create the repository private (an existing one is left as it is).
        token: a Hub token; None: `HF_TOKEN` or the saved login.
        commit_message: default: "Upload elmo-onnx package (<precision>)".

    Returns:
        The URL of the commit.

    Raises:
        ValueError: a malformed `repo_id`.
        FileNotFoundError, PackageError: the package does not verify (see `verified_manifest`).
        huggingface_hub.errors.HfHubHTTPError: the Hub refused (e.g. no or a read-only token).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    repo, revision = parse_repo(repo_id)
    if revision is not None:
        raise ValueError(f"--push-to-hub {repo_id}: give owner/repo without @revision")
    manifest = verified_manifest(package)
    package = Path(package)
    card = model_card(manifest, repo, license).encode("utf-8")
    names = [C.MANIFEST_FILE, *manifest["files"]]
    api = HfApi(endpoint=hub_endpoint(), token=token)
    api.create_repo(repo, private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(package / name)) for name in names]
    operations.append(CommitOperationAdd(path_in_repo=MODEL_CARD, path_or_fileobj=card))
    info = api.create_commit(
        repo, operations, commit_message=commit_message or f"Upload elmo-onnx package ({manifest['precision']['name']})"
    )
    log.info("pushed %s to %s: %s", package, repo, info.commit_url)
    return info.commit_url


def archive_package(
    package: str | Path, archive: str | Path, *, url: str, name: str, model: str, description: str = ""
) -> dict:
    """Write a verified package as a zip archive and return its catalog entry.

    The entry goes under `packages` in a catalog file (see `elmo_runtime.fetch.catalog`); `url` is
    where the archive will be served from.

    Raises:
        FileNotFoundError, PackageError: the package does not verify.
        FileExistsError: `archive` exists.
        ValueError: a name the catalog would refuse.
    """
    manifest = verified_manifest(package)
    precision = manifest["precision"]["name"]
    archive = Path(archive)
    if archive.exists():
        raise FileExistsError(f"{archive} exists; remove it or choose another name")
    tmp = archive.with_name(f".{archive.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for file in [C.MANIFEST_FILE, *manifest["files"]]:
                z.write(Path(package) / file, arcname=file)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        entry = {
            "model": model,
            "precision": precision,
            "url": url,
            "bytes": tmp.stat().st_size,
            "sha256": digest,
            "description": description,
        }
        check_entry(name, entry, archive)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    """`python -m elmo_export.publish archive PACKAGE ARCHIVE --url URL --name NAME --model MODEL`."""
    parser = argparse.ArgumentParser(
        prog="python -m elmo_export.publish", description="Archive a verified package for a catalog; prints its entry."
    )
    parser.add_argument("command", choices=["archive"])
    parser.add_argument("package", type=Path)
    parser.add_argument("archive", type=Path)
    parser.add_argument("--url", required=True, help="where the archive will be served from")
    parser.add_argument("--name", required=True, help=f"the catalog name, e.g. small-int8 (not {SHIPPED_NAME!r})")
    parser.add_argument("--model", required=True, help="the model it was exported from, e.g. small")
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)
    try:
        entry = archive_package(
            args.package, args.archive, url=args.url, name=args.name, model=args.model, description=args.description
        )
    except (OSError, ValueError) as e:
        print(f"publish: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({args.name: entry}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
