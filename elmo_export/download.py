"""Fetch an official model's `options.json` + `weights.hdf5` into a persistent, verified cache.

Where files go (first that is set wins):

1. the `cache_dir` argument;
2. the `ELMO_ONNX_CACHE` environment variable;
3. `$XDG_CACHE_HOME/elmo-onnx/models`, else `~/.cache/elmo-onnx/models`.

Each model gets its own folder, `<cache_dir>/<name>/`, holding `options.json`, `weights.hdf5`
(so the folder itself can be passed wherever local files are accepted) and `sha256.json`, the
digests recorded when each file was first downloaded and verified.

How a file arrives: bytes stream into `<file>.part`; an interrupted transfer is resumed with an
HTTP `Range` request (guarded by `If-Range`, so a file changed on the server restarts cleanly);
the finished `.part` is checked (size against `Content-Length`, options parsed and matched to the
catalog's architecture, every weights dataset's shape checked against the options, pinned sha256
where the catalog has one) and only then renamed onto the final name. A final name therefore
always holds a complete, verified file.

On reuse each cached file's sha256 is recomputed and compared with `sha256.json`; a mismatch
raises `CorruptCacheError` and nothing is overwritten unless `force=True` asks for it.

Offline mode (`ELMO_ONNX_OFFLINE=1`, or `offline=True`) uses the cache only.

Only the standard library speaks HTTP here (urllib); tqdm draws the progress bars.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping

from tqdm import tqdm

from elmo_export.catalog import CatalogModel, check_model_name, get_model, load_catalog
from elmo_runtime import contract as C
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

ENV_CACHE = "ELMO_ONNX_CACHE"
ENV_OFFLINE = "ELMO_ONNX_OFFLINE"
SIDECAR_FILENAME = "sha256.json"
PART_SUFFIX = ".part"
PART_META_SUFFIX = ".part.json"  # the URL and the server's validator, to resume safely

# Seconds to wait before retry number k (1, 2, ...) is `RETRY_DELAY_S * k`.
RETRY_DELAY_S = 2.0
CHUNK_BYTES = 1 << 20
# Answers worth trying again: the server may be fine a moment later.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
# What a failed check raises: ValueError (WeightFileError, bad options, pinned digest), OSError
# (unreadable), KeyError and RuntimeError (h5py on some damaged files).
_VERIFY_ERRORS = (ValueError, OSError, KeyError, RuntimeError)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

_LOCAL_FILES_HINT = (
    "To use files you already have, pass them instead: "
    "`elmo-export --options OPTIONS.json --weights WEIGHTS.hdf5`, "
    "or a directory holding options.json and one .hdf5 file."
)


class DownloadError(RuntimeError):
    """A model file could not be fetched or did not verify; the message says what to do."""


class CorruptCacheError(DownloadError):
    """A cached file no longer matches the sha256 recorded when it was downloaded."""


def default_cache_dir() -> Path:
    """The folder holding one sub-folder per model (see the module docstring for the order)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "elmo-onnx" / "models"


def model_cache_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """`<cache_dir>/<name>/`, where one model's files live."""
    check_model_name(name)
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name


def offline_mode() -> bool:
    """Whether `ELMO_ONNX_OFFLINE` asks for cached files only.

    Raises:
        ValueError: a value that is neither on (1, true, yes, on) nor off (0, false, no, off, empty).
    """
    value = os.environ.get(ENV_OFFLINE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{ENV_OFFLINE}={os.environ[ENV_OFFLINE]!r} is not understood: "
        "use 1/true/yes/on or 0/false/no/off"
    )


def _verified_digest(path: Path, verify: Callable[[Path], None], pinned: str | None) -> str:
    """Run `verify` on a file, then return its sha256, which must equal `pinned` when given."""
    verify(path)
    digest = sha256_of(path)
    if pinned is not None and digest != pinned:
        raise ValueError(f"its sha256 is {digest}, the catalog pins {pinned}")
    return digest


def fetch_model(
    name: str | CatalogModel,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    offline: bool | None = None,
    catalog: Mapping[str, CatalogModel] | str | Path | None = None,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> tuple[Path, Path]:
    """Make sure an official model's two files are in the cache, verified; download what is missing.

    Args:
        name: a catalog name (`"small"`, `"original-5.5b"`, ...) or a `CatalogModel` itself.
        cache_dir: the folder holding one sub-folder per model; default: `default_cache_dir()`.
        progress: draw a tqdm progress bar per file.
        force: download both files again, replacing cached ones (for a corrupt cache).
        offline: use cached files only; `None` reads `ELMO_ONNX_OFFLINE`.
        catalog: the models to look `name` up in, or a catalog file; default: the shipped one.
        retries: attempts per file before giving up (each resumes where the last one stopped).
        timeout_s: seconds without an answer from the server before an attempt fails.

    Returns:
        `(options_path, weights_path)`: `<cache_dir>/<name>/options.json` and `.../weights.hdf5`.

    Raises:
        ValueError: an unknown model name (the known ones are listed), or bad arguments.
        CorruptCacheError: a cached file's sha256 differs from the one recorded at download.
        DownloadError: offline with a file missing, the network or server failed, or a
            downloaded file did not verify (it is deleted; nothing is left under the final name).
    """
    if isinstance(name, CatalogModel):
        model = name
    else:
        models = load_catalog(catalog) if isinstance(catalog, (str, Path)) else catalog
        model = get_model(name, models)
    if type(retries) is not int or retries < 1:
        raise ValueError(f"retries is {retries!r}, expected an integer >= 1")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s is {timeout_s!r}, expected > 0")
    if offline is None:
        offline, offline_source = offline_mode(), f"{ENV_OFFLINE}=1"
    else:
        offline_source = "offline=True"

    directory = model_cache_dir(model.name, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fetch = _Fetcher(model, directory, progress=progress, force=force,
                     offline=offline_source if offline else None, retries=retries, timeout_s=timeout_s)

    options_path = fetch.ensure(C.OPTIONS_FILE, model.options_url, model.options_sha256,
                                lambda path: _verify_options(model, path))
    weights_path = fetch.ensure(C.WEIGHTS_FILE, model.weights_url, model.weights_sha256,
                                lambda path: _verify_weights(options_path, path))
    return options_path, weights_path


def _verify_options(model: CatalogModel, path: Path) -> None:
    """Parse the options and compare them with the catalog's architecture (ValueError if not)."""
    from elmo_export.model import ElmoOptions  # imported here: it pulls in torch

    options = ElmoOptions.from_file(path)
    problems = model.architecture.mismatches(options)
    if problems:
        raise ValueError(
            f"{path} does not describe model {model.name!r} ({model.allennlp_name}): " + "; ".join(problems)
        )


def _verify_weights(options_path: Path, path: Path) -> None:
    """Every dataset present with the shape the options call for (WeightFileError if not)."""
    from elmo_export.model import ElmoOptions
    from elmo_export.weights import check_weight_file

    check_weight_file(ElmoOptions.from_file(options_path), path, options_source=str(options_path))


class _Fetcher:
    """One model's folder: its recorded digests, and how to bring one file into it."""

    def __init__(self, model: CatalogModel, directory: Path, *, progress: bool, force: bool,
                 offline: str | None, retries: int, timeout_s: float):
        self.model, self.directory = model, directory
        self.progress, self.force, self.offline = progress, force, offline
        self.retries, self.timeout_s = retries, timeout_s
        self.sidecar = directory / SIDECAR_FILENAME
        self.record = self._read_sidecar()

    def _read_sidecar(self) -> dict[str, dict]:
        if not self.sidecar.is_file():
            return {}
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            log.warning("%s is unreadable (%s): cached files will be verified again", self.sidecar, e)
            return {}
        if not isinstance(data, dict):
            log.warning("%s is not a JSON object: cached files will be verified again", self.sidecar)
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}

    def _write_sidecar(self) -> None:
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.sidecar)

    def _remember(self, filename: str, url: str, path: Path, digest: str) -> None:
        self.record[filename] = {"url": url, "size": path.stat().st_size, "sha256": digest}
        self._write_sidecar()

    def ensure(self, filename: str, url: str, pinned: str | None,
               verify: Callable[[Path], None]) -> Path:
        """Return `<dir>/<filename>`, complete and verified: from the cache, or downloaded."""
        final = self.directory / filename
        if final.exists() and not self.force:
            cached = self._reuse(final, filename, url, pinned, verify)
            if cached is not None:
                return cached
        if self.offline:
            raise DownloadError(
                f"offline mode ({self.offline}): {final} is not in the cache and downloading "
                f"{url} is not allowed. Run once with network access to fill the cache, "
                f"or put the files there yourself. {_LOCAL_FILES_HINT}"
            )

        part = final.with_name(final.name + PART_SUFFIX)
        meta = final.with_name(final.name + PART_META_SUFFIX)
        if self.force:
            for stale in (part, meta):
                stale.unlink(missing_ok=True)
        self._download(url, part, meta, f"{self.model.name} {filename}")
        try:
            digest = _verified_digest(part, verify, pinned)
        except _VERIFY_ERRORS as e:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise DownloadError(
                f"the file downloaded from {url} failed verification and was deleted: {e}"
            ) from e
        os.replace(part, final)
        meta.unlink(missing_ok=True)
        self._remember(filename, url, final, digest)
        log.info("downloaded and verified %s (%d bytes, sha256 %s)", final, final.stat().st_size, digest)
        return final

    def _reuse(self, final: Path, filename: str, url: str, pinned: str | None,
               verify: Callable[[Path], None]) -> Path | None:
        """The cached file if it checks out; None if it came from another URL (fetch anew)."""
        entry = self.record.get(filename)
        how_to_fix = (
            f"Delete it (or the folder {self.directory}) and fetch again, or call "
            f"fetch_model({self.model.name!r}, force=True) to download it again over the cached copy."
        )
        if entry is None:
            # Present but never recorded: put there by hand, or a crash between the rename and
            # the record. Check it as if just downloaded, then record it.
            try:
                digest = _verified_digest(final, verify, pinned)
            except _VERIFY_ERRORS as e:
                raise CorruptCacheError(f"cached file {final} is not usable: {e}. {how_to_fix}") from e
            self._remember(filename, url, final, digest)
            log.info("verified and recorded %s, found in the cache without a record", final)
            return final
        if entry.get("url") != url:
            if self.offline:
                log.warning("%s came from %s, the catalog now says %s: using it (offline)",
                            final, entry.get("url"), url)
            else:
                log.warning("%s came from %s, the catalog now says %s: downloading again",
                            final, entry.get("url"), url)
                return None
        digest = sha256_of(final)
        if digest != entry["sha256"]:
            raise CorruptCacheError(
                f"cached file {final} is corrupt: its sha256 is {digest}, but {self.sidecar} recorded "
                f"{entry['sha256']} when it was downloaded from {entry.get('url')}. {how_to_fix}"
            )
        if pinned is not None and digest != pinned:
            raise CorruptCacheError(
                f"cached file {final} has sha256 {digest}, but the catalog pins {pinned} "
                f"for model {self.model.name!r}. {how_to_fix}"
            )
        log.info("using cached %s (sha256 verified)", final)
        return final

    def _download(self, url: str, part: Path, meta: Path, desc: str) -> None:
        """Bring `part` to the full length of `url`'s body, resuming what is there."""
        last_error = "no attempt was made"
        for attempt in range(1, self.retries + 1):
            if attempt > 1:
                delay = RETRY_DELAY_S * (attempt - 1)
                log.warning("download of %s: %s; attempt %d of %d in %.0f s",
                            url, last_error, attempt, self.retries, delay)
                time.sleep(delay)
            try:
                if self._attempt(url, part, meta, desc):
                    return
                last_error = "the connection closed before the whole file arrived"
            except _Retry as e:
                last_error = str(e)
        have = part.stat().st_size if part.exists() else 0
        kept = (f" The {have} bytes received are kept in {part}: calling again resumes from there."
                if have else "")
        raise DownloadError(
            f"download of {url} failed after {self.retries} attempt(s): {last_error}.{kept} "
            f"{_LOCAL_FILES_HINT}"
        )

    def _attempt(self, url: str, part: Path, meta: Path, desc: str) -> bool:
        """One request. True: `part` is complete. False: cut short (retry). Raises _Retry too."""
        offset, validator = self._resume_point(url, part, meta)
        response = self._open(url, part, offset, validator)
        if response is None:  # the server says `part` already holds the whole file
            return True
        with response:
            offset, total, mode = self._accept(response, url, part, meta, offset)
            received = self._stream_into(part, mode, response, offset, total, desc)
        if total is None:
            return True  # no length announced: verification is the only check
        if received < total:
            log.info("%s: %d of %d bytes arrived", url, received, total)
            return False
        if received > total:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise DownloadError(
                f"download of {url} failed: {received} bytes arrived, more than the {total} "
                f"announced; the partial file was deleted. {_LOCAL_FILES_HINT}"
            )
        return True

    @staticmethod
    def _resume_point(url: str, part: Path, meta: Path) -> tuple[int, str | None]:
        """Where to resume `part` (0: from the start) and the validator it was fetched under."""
        offset = part.stat().st_size if part.exists() else 0
        if not offset:
            return 0, None
        saved = _read_json(meta)
        if saved.get("url") != url:  # a leftover of another URL: start over
            log.info("discarding %s: it was not downloaded from %s", part, url)
            part.unlink()
            return 0, None
        return offset, saved.get("validator")

    def _open(self, url: str, part: Path, offset: int, validator: str | None):
        """The response to a request for `url` from byte `offset`; None: nothing is left to fetch.

        Raises:
            _Retry: an answer another attempt may fix (a network error, 5xx, a refused range).
            DownloadError: an answer no retry fixes.
        """
        headers = {"User-Agent": "elmo-onnx"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator  # a changed file comes back whole (200)
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            content_range = e.headers.get("Content-Range", "") if e.headers else ""
            e.close()
            if e.code == 416 and offset:
                match = _UNSATISFIED_RANGE.match(content_range or "")
                if match and int(match.group(1)) == offset:
                    log.info("%s already holds all %d bytes", part, offset)
                    return None
                log.info("the server refused to resume %s: starting over", part)
                part.unlink(missing_ok=True)
                raise _Retry(f"HTTP 416 for bytes {offset}- of a partial download") from None
            if e.code in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {e.code} {e.reason}") from None
            raise DownloadError(
                f"download of {url} failed: the server answered HTTP {e.code} {e.reason}. "
                f"{_LOCAL_FILES_HINT}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise _Retry(f"{type(reason).__name__}: {reason}") from None

    @staticmethod
    def _accept(response, url: str, part: Path, meta: Path, offset: int) -> tuple[int, int | None, str]:
        """What the answer means for `part`: -> `(offset, total bytes or None, file mode)`.

        A 206 continues `part` where it ends; a 200 sends the whole file again (a changed file,
        or a server that ignores ranges): `part` restarts, and its URL and validator are saved.
        """
        length = _int_header(response.headers.get("Content-Length"))
        if response.status == 206 and offset:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"the server resumed at the wrong place "
                             f"(Content-Range {response.headers.get('Content-Range')!r})")
            total = (int(match.group(3)) if match.group(3) != "*"
                     else offset + length if length is not None else None)
            log.info("resuming %s at byte %d", url, offset)
            return offset, total, "ab"
        if response.status == 200:
            if offset:
                log.info("the server sent all of %s again (it ignored the range): restarting", url)
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            meta.write_text(json.dumps({"url": url, "validator": validator}) + "\n", encoding="utf-8")
            return 0, length, "wb"
        raise DownloadError(
            f"download of {url} failed: unexpected HTTP {response.status} "
            f"{response.reason}. {_LOCAL_FILES_HINT}"
        )

    def _stream_into(self, part: Path, mode: str, response, offset: int, total: int | None, desc: str) -> int:
        """Copy the response body into `part`; -> the bytes `part` then holds.

        Raises:
            _Retry: the transfer broke (what arrived is kept, to resume from).
        """
        received = offset
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=None if self.progress else True, leave=False,
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:
                out.flush()
                raise _Retry(f"the transfer broke after {received} bytes ({type(e).__name__}: {e})") from None
        return received


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
