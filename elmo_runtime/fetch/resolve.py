"""From what a user types (a folder, a name, a Hub repository) to a verified package folder.

`resolve_package(name_or_path)` tries, in this order:

1. `"default"` (and `Elmo()` with no argument): the default model's int8 package, shipped
   inside `elmo_runtime` (no network), whatever the current directory holds: a folder named
   `default` there is `./default`;
2. a local package folder (a path to a directory holding `elmo.json`);
3. `hf:owner/repo[@revision]`: a package on the Hugging Face Hub (`elmo_runtime.fetch.hub`);
4. a catalog name (`elmo_runtime.fetch.catalog`: the project's catalog and `ELMO_ONNX_CATALOG`),
   downloaded once into `<cache>/packages/<name>/`.

A catalog package arrives as a zip archive, resumable, checked against the catalog's bytes and
sha256 (`elmo_runtime.fetch.download`), unpacked into a staging folder beside its final place, checked
file by file against its manifest's sha256s, and only then renamed into place: a folder under
its final name is always a whole, verified package. Beside it, `<name>.source.json` records the
archive it came from and its manifest's sha256, so that a cached package is re-checked on every
load back to the catalog's pin.

Processes loading the same package into one cache at once take turns on `packages/.<name>.lock`
(an exclusive `flock`): the first downloads and installs, the others then find it installed.
Only `elmo.json` and the files its manifest lists are extracted from an archive, each checked
against its listed size first; the installed folder gets the modes the umask gives a new folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.fetch.catalog import ENV_CATALOG, SHIPPED_NAME, PackageEntry, load_catalogs
from elmo_runtime.package import PackageError, load_manifest

log = logging.getLogger(__name__)

SHIPPED_PACKAGE = Path(__file__).resolve().parents[1] / SHIPPED_NAME
HUB_PREFIX = "hf:"
SOURCE_SUFFIX = ".source.json"
ARCHIVES = ".archives"  # where archives download (resumable) before they are unpacked


def accepted_forms(names: list[str]) -> str:
    """The sentence every "unknown package" error ends with."""
    return (
        f"Packages by name: {', '.join(names)}. Also accepted: a package folder (holding "
        f"{C.MANIFEST_FILE}), hf:owner/repo[@revision] for a package on the Hugging Face Hub, or a name "
        f"from a catalog of your own ({ENV_CATALOG}=/path/to/catalog.json)."
    )


def resolve_package(
    name_or_path: str | os.PathLike = SHIPPED_NAME,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    catalog: list[str | Path] | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The folder of a verified package for a path, a name or a Hub repository.

    Args:
        name_or_path: see the module docstring for the forms and their order.
        cache_dir: the cache's top folder; default: `elmo_runtime.fetch.download.cache_root()`.
        offline: use the cache only; None reads `ELMO_ONNX_OFFLINE`.
        catalog: catalog files to look names up in; default: the project's and `ELMO_ONNX_CATALOG`'s.
        progress: progress bars for downloads.
        force: download again over a cached copy (for a corrupt cache).

    Returns:
        A package folder (`elmo_runtime.Elmo` opens it).

    Raises:
        FileNotFoundError: a path that does not exist or is not a package.
        ValueError: an unknown name (the names that exist and the accepted forms are listed).
        DownloadError: offline and not cached (saying what to do), or the download failed.
        CorruptCacheError: a cached package no longer matches its manifest or its record.
        PackageError: a downloaded or Hub package that is not a valid package.
    """
    text = os.fspath(name_or_path)
    if text == SHIPPED_NAME and isinstance(name_or_path, str):  # never a folder of the cwd (Path("default") is one)
        return SHIPPED_PACKAGE
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text.startswith(HUB_PREFIX):
        from elmo_runtime.fetch.hub import fetch_hub_package  # imported here: huggingface_hub takes time

        return fetch_hub_package(text[len(HUB_PREFIX) :], cache_dir=cache_dir, offline=offline, progress=progress)
    if path.exists():
        raise FileNotFoundError(
            f"{path} is a file, not a package folder (a package is a folder holding {C.MANIFEST_FILE})"
        )
    looks_like_a_path = (
        not isinstance(name_or_path, str)
        or os.sep in text
        or (os.altsep and os.altsep in text)
        or text.startswith((".", "~"))
    )
    if looks_like_a_path:
        raise FileNotFoundError(f"model package not found: there is no folder {text}")
    packages = load_catalogs(catalog)
    if text not in packages:
        raise ValueError(f"unknown package {text!r}. {accepted_forms([SHIPPED_NAME, *packages])}")
    return fetch_catalog_package(packages[text], cache_dir=cache_dir, offline=offline, progress=progress, force=force)


def fetch_catalog_package(
    entry: PackageEntry,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """`<cache>/packages/<name>/`, verified: from the cache, or downloaded and unpacked.

    Raises:
        DownloadError, CorruptCacheError, PackageError: see `resolve_package`.
    """
    # Imported here: urllib and tqdm cost `import elmo_runtime` a quarter of a second.
    from elmo_runtime.fetch.download import cache_root, locked, resolve_offline

    packages = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "packages"
    if not resolve_offline(offline):
        with contextlib.suppress(OSError):  # a read-only cache: `locked` goes on without a lock
            packages.mkdir(parents=True, exist_ok=True)
    if not packages.is_dir():  # offline with no cache: nothing to lock, the error says what to do
        return _fetch_catalog_package(entry, packages, offline, progress, force)
    with locked(packages / f".{entry.name}.lock"):
        return _fetch_catalog_package(entry, packages, offline, progress, force)


def _fetch_catalog_package(
    entry: PackageEntry, packages: Path, offline: bool | None, progress: bool, force: bool
) -> Path:
    """`fetch_catalog_package` once it holds the package's lock (or the cache cannot be written)."""
    from elmo_runtime.fetch.download import CachedFiles, DownloadError, read_json_object, resolve_offline

    final, record_path = packages / entry.name, packages / (entry.name + SOURCE_SUFFIX)
    offline_source = resolve_offline(offline)
    how_to_fix = (
        f"Delete {final} and {record_path.name} beside it and load it again (or pass force=True) to download it again."
    )
    if final.is_dir() and not force:
        record = read_json_object(record_path)
        if record.get("sha256") == entry.sha256 or (offline_source and record):
            if record.get("sha256") != entry.sha256:
                log.warning("%s came from another archive than the catalog now lists: using it (offline)", final)
            _check_cached(final, record, record_path, how_to_fix)
            log.info("using cached package %s (verified)", final)
            return final
        if not record:
            from elmo_runtime.fetch.download import CorruptCacheError

            raise CorruptCacheError(
                f"{final} has no readable record of where it came from ({record_path}): "
                f"it cannot be trusted as package {entry.name!r}. {how_to_fix}"
            )
        log.info("the catalog lists a new archive for %s: downloading it", entry.name)
    if offline_source:
        raise DownloadError(
            f"offline mode ({offline_source}): package {entry.name!r} is not in the cache ({final}) and "
            f"downloading {entry.url} is not allowed. Run once with network access (or unset "
            f"ELMO_ONNX_OFFLINE) to fill the cache, or download the archive yourself, unzip it into a folder "
            f"and pass that folder instead of the name."
        )
    # No lock of its own: the package's lock is held, and .archives is shared by every package.
    archives = CachedFiles(
        packages / ARCHIVES,
        f"package {entry.name!r}",
        progress=progress,
        force=force,
        how_to_fix=how_to_fix,
        lock=False,
    )
    archive = archives.ensure(entry.name + ".zip", entry.url, sha256=entry.sha256, size=entry.bytes)
    try:
        _install(archive, final, record_path, {"url": entry.url, "sha256": entry.sha256, "catalog": str(entry.catalog)})
    finally:
        archive.unlink(missing_ok=True)  # the unpacked package is what is kept; a bad one is not kept at all
    return final


def manifest_sha256(directory: Path) -> str:
    return hashlib.sha256((directory / C.MANIFEST_FILE).read_bytes()).hexdigest()


def _check_cached(directory: Path, record: dict, record_path: Path, how_to_fix: str) -> None:
    """The manifest is the one recorded at install, and every file matches the manifest."""
    from elmo_runtime.fetch.download import CorruptCacheError

    try:
        digest = manifest_sha256(directory)
    except OSError as e:
        raise CorruptCacheError(f"cached package {directory} is not usable: {e}. {how_to_fix}") from None
    if digest != record.get("manifest_sha256"):
        raise CorruptCacheError(
            f"cached package {directory} is corrupt: {C.MANIFEST_FILE} has sha256 {digest}, but {record_path} "
            f"recorded {record.get('manifest_sha256')} when it was installed. {how_to_fix}"
        )
    try:
        load_manifest(directory, verify_files=True)
    except (PackageError, FileNotFoundError) as e:
        raise CorruptCacheError(f"cached package {directory} is corrupt: {e}. {how_to_fix}") from None


def _install(archive: Path, final: Path, record_path: Path, record: dict) -> None:
    """Unpack, verify and rename into place; on any failure nothing is left under `final`."""
    from elmo_runtime.fetch.download import STAGING_SUFFIX

    with scratch.staged_dir(final, STAGING_SUFFIX) as staging:
        _unpack(archive, staging)
        scratch.open_to_umask(staging)  # the modes of a plain mkdir and open(), whatever extraction gave
        try:
            load_manifest(staging, verify_files=True)
        except (PackageError, FileNotFoundError) as e:
            raise PackageError(
                f"the package archive downloaded from {record['url']} is not a valid package: {e}".replace(
                    str(staging), "(archive)"
                )
            ) from None
        record = {**record, "manifest_sha256": manifest_sha256(staging)}
        tmp = record_path.with_name(record_path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        # A stale or older package is replaced only now that the new one verified.
        scratch.replace_dir(staging, final)
        os.replace(tmp, record_path)
    log.info("installed package %s from %s", final, record["url"])


# A manifest is a few kB (the warm state of the largest model is under 100 kB); more is not one.
MAX_MANIFEST_BYTES = 64 << 20


def _unpack(archive: Path, into: Path) -> None:
    """Extract `elmo.json` and the files its manifest lists into `into`, and nothing else.

    Every member's name is checked first (plain names only, each once); a listed file must have
    the size the manifest gives before a byte of it is written, so an archive cannot fill the
    disk with members nobody asked for. Unlisted members are skipped (and logged).
    """
    try:
        with zipfile.ZipFile(archive) as z:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in z.infolist():
                name = PurePosixPath(info.filename)
                if info.is_dir() or len(name.parts) != 1 or name.name in ("", ".", "..") or "\\" in info.filename:
                    raise PackageError(
                        f"package archive {archive.name}: member {info.filename!r} is not a plain "
                        "file name (a package archive holds the package's files, no folders)"
                    )
                if info.filename in members:
                    raise PackageError(f"package archive {archive.name}: member {info.filename!r} appears twice")
                members[info.filename] = info
            wanted = _listed_sizes(z, members, archive.name)
            skipped = sorted(set(members) - set(wanted))
            if skipped:
                log.warning(
                    "package archive %s: skipped %d member(s) its manifest does not list: %s",
                    archive.name,
                    len(skipped),
                    ", ".join(skipped[:5]),
                )
            for name, size in wanted.items():
                if name not in members:
                    continue  # load_manifest names the missing file
                if members[name].file_size != size:
                    raise PackageError(
                        f"package archive {archive.name}: member {name!r} has {members[name].file_size}"
                        f" bytes, its manifest says {size}"
                    )
                with z.open(members[name]) as source, open(into / name, "xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except zipfile.BadZipFile as e:
        raise PackageError(f"package archive {archive.name} is not a zip archive ({e})") from None


def _listed_sizes(z: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], archive: str) -> dict[str, int]:
    """`{name: bytes}`: the manifest itself, then each plain file name its `files` lists."""
    info = members.get(C.MANIFEST_FILE)
    if info is None:
        raise PackageError(f"package archive {archive} holds no {C.MANIFEST_FILE}")
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"package archive {archive}: {C.MANIFEST_FILE} has {info.file_size} bytes, more than a "
            f"manifest can need ({MAX_MANIFEST_BYTES})"
        )
    try:
        files = json.loads(z.read(info)).get("files")
    except (ValueError, AttributeError, RecursionError) as e:
        raise PackageError(f"package archive {archive}: {C.MANIFEST_FILE} is not a JSON manifest ({e})") from None
    wanted = {C.MANIFEST_FILE: info.file_size}
    for name, listed in files.items() if isinstance(files, dict) else ():
        size = listed.get("bytes") if isinstance(listed, dict) else None
        if isinstance(name, str) and name in members and type(size) is int and name != C.MANIFEST_FILE:
            wanted[name] = size
    return wanted
