"""Packages on the Hugging Face Hub: `hf:owner/repo[@revision]`, through `huggingface_hub`.

`huggingface_hub` (installed with tokenizers) does the transfer: resumable downloads into its
cache under `<cache>/hub`, revisions resolved to commits, `local_files_only` for offline mode,
`HF_ENDPOINT` and `HF_TOKEN` for another Hub or a private repository. This module adds what a
package is: `elmo.json` first (a repository without one is not a package, and says so), then
exactly the files it lists, pinned to the commit the manifest came from, each checked against
the manifest's sha256. The verified files are then moved out of the Hub's cache into
`<cache>/packages/hf/<owner>/<repo>/<commit>/` through a staging folder and a rename, so the
runtime opens a plain folder and never a half-downloaded one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.fetch.download import STAGING_SUFFIX, CorruptCacheError, DownloadError, cache_root, resolve_offline
from elmo_runtime.package import PackageError, load_manifest

log = logging.getLogger(__name__)

ENV_ENDPOINT = "HF_ENDPOINT"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def parse_repo(spec: str) -> tuple[str, str | None]:
    """`owner/repo[@revision]` -> (repo id, revision or None).

    Raises:
        ValueError: anything else, with the accepted form.
    """
    repo, _, revision = spec.partition("@")
    if not _REPO.match(repo) or ".." in repo or (_ and not revision):
        raise ValueError(
            f"hf:{spec} is not a Hub package: write hf:owner/repo or hf:owner/repo@revision (a branch, tag or commit)"
        )
    return repo, revision or None


def endpoint() -> str | None:
    """`HF_ENDPOINT` when set (read at each call, so that a test or a user can change it)."""
    return os.environ.get(ENV_ENDPOINT, "").strip().rstrip("/") or None


def fetch_hub_package(
    spec: str, *, cache_dir: str | Path | None = None, offline: bool | None = None, progress: bool = True
) -> Path:
    """The verified folder of the package in Hub repository `owner/repo[@revision]`.

    Raises:
        ValueError: a malformed repository name.
        PackageError: the repository (or revision) does not exist, has no `elmo.json`, or its
            files do not match their manifest (the downloaded copy is deleted).
        DownloadError: offline and not in the cache (saying what to do), or the Hub failed.
    """
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    repo, revision = parse_repo(spec)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    offline_source = resolve_offline(offline)
    where = f"Hub repository {repo}" + (f" at revision {revision}" if revision else "")
    common = {"cache_dir": root / "hub", "endpoint": endpoint(), "local_files_only": bool(offline_source)}

    def download(filename: str, at: str | None) -> Path:
        return _download(repo, filename, at, where, common, offline_source)

    if not progress:
        disable_progress_bars()
    try:
        manifest_path = download(C.MANIFEST_FILE, revision)
        commit = manifest_path.parent.name  # huggingface_hub's snapshots/<commit>/ folder
        if not _COMMIT.match(commit):
            raise PackageError(f"{where}: unexpected cache layout {manifest_path}")
        final = root / "packages" / "hf" / repo / commit
        if final.is_dir():
            _verify(final, where, final)
            return final
        files = _listed_files(manifest_path, where)
        paths = {name: download(name, commit) for name in files}
    finally:
        if not progress:
            enable_progress_bars()
    _install(manifest_path, paths, final, where)
    return final


def _download(repo: str, filename: str, at: str | None, where: str, common: dict, offline_source: str | None) -> Path:
    """One file of the repository through huggingface_hub's cache; its errors as ours, in one line."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=at, **common))
    except hf_errors.RevisionNotFoundError:
        raise PackageError(f"{where}: no such revision") from None
    except hf_errors.RepositoryNotFoundError:
        raise PackageError(f"{where} does not exist (or it is private: set HF_TOKEN)") from None
    except hf_errors.LocalEntryNotFoundError:
        if offline_source:
            raise DownloadError(
                f"offline mode ({offline_source}): {filename} of {where} is not in the cache ({common['cache_dir']}). "
                "Run once with network access (or unset ELMO_ONNX_OFFLINE) to fill the cache, or download "
                "the repository's files into a folder yourself and pass that folder."
            ) from None
        raise DownloadError(
            f"{where}: {filename} could not be downloaded (is the Hub reachable? "
            f"{ENV_ENDPOINT}={endpoint() or 'unset'})"
        ) from None
    except hf_errors.EntryNotFoundError:
        if filename == C.MANIFEST_FILE:
            raise PackageError(
                f"{where} has no {C.MANIFEST_FILE}: it is not an elmo-onnx model package "
                "(publish one with elmo-export --push-to-hub)"
            ) from None
        raise PackageError(f"{where}: {filename}, listed in its {C.MANIFEST_FILE}, is missing") from None
    except (hf_errors.HfHubHTTPError, OSError) as e:
        raise DownloadError(f"{where}: downloading {filename} failed: {e}") from None


def _listed_files(manifest_path: Path, where: str) -> list[str]:
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        names = list(files)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PackageError(f"{where}: its {C.MANIFEST_FILE} is not a package manifest (no 'files' object)") from None
    bad = [n for n in names if not isinstance(n, str) or "/" in n or "\\" in n or n in ("", ".", "..")]
    if bad:
        raise PackageError(f"{where}: its {C.MANIFEST_FILE} lists file names outside the package: {bad}")
    return names


def _verify(directory: Path, where: str, delete: Path) -> None:
    """Every file against the manifest; on a mismatch `delete` goes and the error names the file."""
    try:
        load_manifest(directory, verify_files=True)
    except (PackageError, FileNotFoundError) as e:
        shutil.rmtree(delete, ignore_errors=True)
        raise CorruptCacheError(
            f"{where}: {e}; the downloaded copy was deleted: load it again to download it again"
        ) from None


def _install(manifest_path: Path, paths: dict[str, Path], final: Path, where: str) -> None:
    """Link the downloaded files into a staging folder, verify, rename into place."""
    with scratch.staged_dir(final, STAGING_SUFFIX) as staging:
        shutil.copyfile(manifest_path, staging / C.MANIFEST_FILE)  # kept in the Hub's cache: it maps revisions
        for name, source in paths.items():
            # Moved, not linked: ONNX Runtime refuses external data with several hard links (a
            # guard against hardlink attacks), and a copy would double the disk used.
            blob = source.resolve()  # the Hub cache's snapshot entries are links to its blobs
            try:
                os.replace(blob, staging / name)
            except OSError:
                shutil.copyfile(blob, staging / name)
        scratch.open_to_umask(staging)  # the Hub cache's modes would make the package private
        try:
            load_manifest(staging, verify_files=True)
        except (PackageError, FileNotFoundError) as e:
            for source in paths.values():  # a wrong blob must not be served again from the Hub's cache
                source.unlink(missing_ok=True)
            raise PackageError(
                f"{where}: {str(e).replace(str(staging), 'the download')}; the downloaded files were deleted"
            ) from None
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # else another process installed it meanwhile: use theirs
                raise
    log.info("installed %s into %s", where, final)
