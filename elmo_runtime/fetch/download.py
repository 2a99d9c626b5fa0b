"""Bring files into a persistent cache folder over HTTP: resumable, verified, recorded.

This is the generic half of every download elmo-onnx makes (model packages for the runtime,
TensorFlow weights for the exporter); what "verified" means for a file is the caller's
`verify` function and, where known, a pinned sha256.

Where the cache is (first that is set wins): the `cache_dir` argument of the caller; the
`ELMO_ONNX_CACHE` environment variable; `$XDG_CACHE_HOME/elmo-onnx`, else
`~/.cache/elmo-onnx`. Under it, `packages/` holds model packages by name, `hub/` the Hugging
Face Hub's downloads and `models/` the exporter's TensorFlow weights.

How a file arrives: bytes stream into `<file>.part`; an interrupted transfer is resumed with an
HTTP `Range` request (guarded by `If-Range`, so a file changed on the server restarts cleanly);
the finished `.part` is checked (size against `Content-Length` and any expected size, the
caller's `verify`, the pinned sha256) and only then renamed onto the final name. A final name
therefore always holds a complete, verified file; a file that fails is deleted.

Each folder records in `sha256.json` the digest of every file it downloaded and verified; on
reuse the digest is recomputed and compared (a mismatch raises `CorruptCacheError`, nothing is
overwritten unless `force` asks for it). A file found without a record (put there by hand) is
checked by `verify` and its pin; it is recorded only when a pin vouches for it, so that a lost
record is never rebuilt from whatever the cache holds now, and a read-only cache filled by hand
works. A record that exists but cannot be read is an error, not a reason to trust the files.

Offline mode (`ELMO_ONNX_OFFLINE=1`, or `offline=True`) uses the cache only.

Bounds on a transfer: a body longer than the expected size (the caller's `size`, else the
server's own Content-Length) is stopped as soon as it passes it and its `.part` deleted, so an
endless body cannot fill the disk; and a transfer that brings fewer than `STALL_MIN_BYTES` in
`ELMO_ONNX_STALL_TIMEOUT` seconds (default 60), silence included, is abandoned (and retried,
resuming), so a server dripping a byte at a time cannot hold a process forever.

Several processes filling one cache at once take turns: `ensure` holds an exclusive `flock` on
its folder, and reads the record again once it holds it, so the second process finds the file
the first one verified instead of writing into the same `.part`.

Only the standard library speaks HTTP here (urllib); tqdm draws the progress bars.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

ENV_CACHE = "ELMO_ONNX_CACHE"
ENV_OFFLINE = "ELMO_ONNX_OFFLINE"
# A downloaded package being put together beside its cache folder (`scratch.staged_dir`); not
# `.partial`, which names an unfinished export that loading refuses.
STAGING_SUFFIX = ".download"
ENV_STALL = "ELMO_ONNX_STALL_TIMEOUT"
DEFAULT_STALL_S = 60.0
# A transfer must bring at least this many bytes per stall window: 1 byte every 2 s is no download.
STALL_MIN_BYTES = 1024
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
# What a failed check raises: ValueError (bad content, pinned digest), OSError (unreadable),
# KeyError and RuntimeError (h5py on some damaged files).
VERIFY_ERRORS = (ValueError, OSError, KeyError, RuntimeError)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class DownloadError(RuntimeError):
    """A file could not be fetched or did not verify; the message says what to do."""


class CorruptCacheError(DownloadError):
    """A cached file no longer matches what was recorded or pinned, or the record is unreadable."""


def cache_root() -> Path:
    """The cache's top folder (see the module docstring for the order)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "elmo-onnx"


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
        f"{ENV_OFFLINE}={os.environ[ENV_OFFLINE]!r} is not understood: use 1/true/yes/on or 0/false/no/off"
    )


def resolve_offline(offline: bool | None) -> str | None:
    """None when downloads are allowed, else how offline mode was asked for (for messages)."""
    if offline is None:
        return f"{ENV_OFFLINE}=1" if offline_mode() else None
    return "offline=True" if offline else None


def stall_timeout() -> float:
    """Seconds a transfer may go without bringing `STALL_MIN_BYTES` (`ELMO_ONNX_STALL_TIMEOUT`).

    Raises:
        ValueError: a value that is not a positive number.
    """
    value = os.environ.get(ENV_STALL, "").strip()
    if not value:
        return DEFAULT_STALL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{ENV_STALL}={value!r} is not a positive number of seconds")
    return seconds


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (a folder, or a lock file created if missing).

    A cache that cannot be written (read-only) cannot be changed by anyone through us either: the
    lock is then skipped, and only reading happens.
    """
    try:
        fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        log.debug("no lock on %s (%s): going on without one", path, e)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _verified_digest(path: Path, verify: Callable[[Path], None] | None, pinned: str | None) -> str:
    """Run `verify` on a file, then return its sha256, which must equal `pinned` when given."""
    if verify is not None:
        verify(path)
    digest = sha256_of(path)
    if pinned is not None and digest != pinned:
        raise ValueError(f"its sha256 is {digest}, the catalog pins {pinned}")
    return digest


class CachedFiles:
    """One cache folder: its recorded digests, and how to bring one file into it.

    Args:
        directory: the folder (created when a download needs it).
        label: how messages name what the folder holds (e.g. "model 'small'").
        offline: None (downloads allowed) or how offline mode was asked for (`resolve_offline`).
        force: download files again over cached copies (for a corrupt cache).
        how_to_fix: what a `CorruptCacheError` tells the user to do.
        hint: a sentence every download failure ends with (e.g. how to use local files).
    """

    def __init__(
        self,
        directory: Path,
        label: str,
        *,
        offline: str | None = None,
        force: bool = False,
        progress: bool = True,
        retries: int = 3,
        timeout_s: float = 60.0,
        stall_s: float | None = None,
        how_to_fix: str = "",
        hint: str = "",
        lock: bool = True,
    ):
        if type(retries) is not int or retries < 1:
            raise ValueError(f"retries is {retries!r}, expected an integer >= 1")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s is {timeout_s!r}, expected > 0")
        stall_s = stall_timeout() if stall_s is None else stall_s
        if not stall_s > 0:
            raise ValueError(f"stall_s is {stall_s!r}, expected > 0")
        self.directory, self.label = Path(directory), label
        self.progress, self.force, self.offline = progress, force, offline
        self.retries, self.timeout_s, self.stall_s, self.lock = retries, timeout_s, stall_s, lock
        self.how_to_fix = how_to_fix or f"Delete it (or the folder {self.directory}) and fetch again."
        self.hint = hint
        self.sidecar = self.directory / SIDECAR_FILENAME
        self.record, self.record_error = self._read_sidecar()

    def _read_sidecar(self) -> tuple[dict[str, dict], str | None]:
        """The record, and why it could not be read (None: it could, or there is none)."""
        if not self.sidecar.exists():
            return {}, None
        try:
            data = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            return {}, f"it is unreadable ({e})"
        if not isinstance(data, dict):
            return {}, "it is not a JSON object"
        return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}, None

    def _remember(self, filename: str, url: str, path: Path, digest: str) -> None:
        self.record[filename] = {"url": url, "size": path.stat().st_size, "sha256": digest}
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.sidecar)
            self.record_error = None
        except OSError as e:  # a read-only cache: the pin still vouches for the file next time
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            log.warning(
                "could not record %s's sha256 in %s (%s); it will be checked again next time", filename, self.sidecar, e
            )

    def ensure(
        self,
        filename: str,
        url: str | Sequence[str],
        *,
        sha256: str | None = None,
        size: int | None = None,
        verify: Callable[[Path], None] | None = None,
    ) -> Path:
        """Return `<directory>/<filename>`, complete and verified: from the cache, or downloaded.

        Args:
            filename: the name in the folder.
            url: where to download it from; or several places serving the same file (a primary
                and its mirrors), tried in order until one gives a file that verifies. A cached
                copy from any of them is reused.
            sha256: the pinned digest it must have, if known.
            size: the byte count it must have, if known.
            verify: raises ValueError (or OSError, KeyError, RuntimeError) on bad content.

        Raises:
            CorruptCacheError: the cached file differs from its record or pin, or does not verify.
            DownloadError: offline and missing, the transfer failed, or the download did not
                verify (it is deleted).
        """
        if not self.lock or (self.offline and not self.directory.is_dir()):
            return self._ensure(filename, url, sha256, size, verify)
        with contextlib.suppress(OSError):  # read-only: `locked` goes on without a lock, nothing is written
            self.directory.mkdir(parents=True, exist_ok=True)
        with locked(self.directory):
            # Another process may have downloaded and recorded the file while this one waited.
            self.record, self.record_error = self._read_sidecar()
            return self._ensure(filename, url, sha256, size, verify)

    def _ensure(
        self,
        filename: str,
        url: str | Sequence[str],
        sha256: str | None,
        size: int | None,
        verify: Callable[[Path], None] | None,
    ) -> Path:
        urls = [url] if isinstance(url, str) else list(url)
        final = self.directory / filename
        check = _with_size(verify, size)
        if final.exists() and not self.force:
            cached = self._reuse(final, filename, urls, sha256, check)
            if cached is not None:
                return cached
        failures: list[DownloadError] = []
        for k, source in enumerate(urls):
            try:
                return self._fetch(final, filename, source, sha256, size, check)
            except CorruptCacheError:
                raise
            except DownloadError as e:
                failures.append(e)
                if self.offline:
                    raise
                if k + 1 < len(urls):
                    log.warning("%s; trying the next source, %s", e, urls[k + 1])
        if len(failures) == 1:
            raise failures[0]
        raise DownloadError(
            f"{filename}: every source failed ({len(failures)}): " + " | ".join(str(e) for e in failures)
        )

    def _fetch(
        self,
        final: Path,
        filename: str,
        url: str,
        sha256: str | None,
        size: int | None,
        check: Callable[[Path], None] | None,
    ) -> Path:
        """Download `url` to `final` through its `.part`, and verify it (DownloadError if not)."""
        if self.offline:
            raise DownloadError(
                f"offline mode ({self.offline}): {final} is not in the cache and downloading "
                f"{url} is not allowed. Run once with network access to fill the cache, or put "
                f"the file there yourself. {self.hint}".rstrip()
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + PART_SUFFIX)
        meta = final.with_name(final.name + PART_META_SUFFIX)
        if self.force:
            for stale in (part, meta):
                stale.unlink(missing_ok=True)
        self._download(url, part, meta, f"{self.label} {filename}", size)
        try:
            digest = _verified_digest(part, check, sha256)
        except VERIFY_ERRORS as e:
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            raise DownloadError(
                f"{filename}: the file downloaded from {url} failed verification and was deleted: {e}"
            ) from e
        os.replace(part, final)
        meta.unlink(missing_ok=True)
        self._remember(filename, url, final, digest)
        log.info("downloaded and verified %s (%d bytes, sha256 %s)", final, final.stat().st_size, digest)
        return final

    def _reuse(
        self, final: Path, filename: str, urls: list[str], pinned: str | None, verify: Callable[[Path], None] | None
    ) -> Path | None:
        """The cached file if it checks out; None if it came from another URL (fetch anew)."""
        entry, url = self.record.get(filename), urls[0]
        if entry is None:
            return self._reuse_unrecorded(final, filename, url, pinned, verify)
        if entry.get("url") not in urls:
            if self.offline:
                log.warning(
                    "%s came from %s, the catalog now says %s: using it (offline)", final, entry.get("url"), url
                )
            else:
                log.warning("%s came from %s, the catalog now says %s: downloading again", final, entry.get("url"), url)
                return None
        digest = sha256_of(final)
        if digest != entry["sha256"]:
            raise CorruptCacheError(
                f"cached file {final} is corrupt: its sha256 is {digest}, but {self.sidecar} recorded "
                f"{entry['sha256']} when it was downloaded from {entry.get('url')}. {self.how_to_fix}"
            )
        if pinned is not None and digest != pinned:
            raise CorruptCacheError(
                f"cached file {final} has sha256 {digest}, but the catalog pins {pinned} "
                f"for {self.label}. {self.how_to_fix}"
            )
        log.info("using cached %s (sha256 verified)", final)
        return final

    def _reuse_unrecorded(
        self, final: Path, filename: str, url: str, pinned: str | None, verify: Callable[[Path], None] | None
    ) -> Path:
        """A cached file with no record: put there by hand, or its record was lost or garbled."""
        if self.record_error is not None and pinned is None:
            # Whatever recorded the digest is gone: the file may have changed since, and nothing
            # else vouches for it. Rebuilding the record from it would launder a corrupt file.
            raise CorruptCacheError(
                f"cached file {final} cannot be trusted: the record of verified digests "
                f"{self.sidecar} is damaged ({self.record_error}) and no sha256 is pinned for "
                f"{self.label}. {self.how_to_fix} If you filled the folder yourself, delete "
                f"{self.sidecar.name} instead."
            )
        try:
            digest = _verified_digest(final, verify, pinned)
        except VERIFY_ERRORS as e:
            raise CorruptCacheError(f"cached file {final} is not usable: {e}. {self.how_to_fix}") from e
        if pinned is not None:
            self._remember(filename, url, final, digest)
            log.info("verified %s against its pinned sha256 and recorded it", final)
        else:
            log.warning(
                "using %s, found in the cache without a record: its content was checked, but no "
                "sha256 is pinned for it, so it is not recorded as verified",
                final,
            )
        return final

    def _download(self, url: str, part: Path, meta: Path, desc: str, size: int | None = None) -> None:
        """Bring `part` to the full length of `url`'s body (`size` bytes, if known), resuming what is there."""
        last_error, stalled = "no attempt was made", False
        for attempt in range(1, self.retries + 1):
            if attempt > 1:
                delay = RETRY_DELAY_S * (attempt - 1)
                log.warning(
                    "download of %s: %s; attempt %d of %d in %.0f s", url, last_error, attempt, self.retries, delay
                )
                time.sleep(delay)
            try:
                bounds = _Bounds(size, min(self.timeout_s, self.stall_s), self.stall_s)
                if _attempt(url, part, meta, desc, bounds, self.progress, self.hint):
                    return
                last_error, stalled = "the connection closed before the whole file arrived", False
            except _Retry as e:
                last_error, stalled = str(e), isinstance(e, _Stall)
        if stalled:  # a server that crawls or hangs is misbehaving: what it sent is not kept to resume
            raise _discard(url, part, meta, f"{last_error} ({self.retries} attempt(s))", self.hint)
        have = part.stat().st_size if part.exists() else 0
        kept = f" The {have} bytes received are kept in {part}: calling again resumes from there." if have else ""
        raise DownloadError(
            f"download of {url} failed after {self.retries} attempt(s): {last_error}.{kept} {self.hint}".rstrip()
        )


def _with_size(verify: Callable[[Path], None] | None, size: int | None) -> Callable[[Path], None] | None:
    if size is None:
        return verify

    def check(path: Path) -> None:
        found = path.stat().st_size
        if found != size:
            raise ValueError(f"it has {found} bytes, the catalog says {size}")
        if verify is not None:
            verify(path)

    return check


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""


class _Stall(_Retry):
    """The server stopped sending, or sends too slowly to ever finish."""


@dataclass(frozen=True)
class _Bounds:
    """What one transfer may take: its expected size, and how long it may wait or crawl."""

    size: int | None  # the whole file's byte count, if the caller knows it (the catalog's)
    read_timeout_s: float  # one socket read
    stall_s: float  # a window that must bring STALL_MIN_BYTES


def _discard(url: str, part: Path, meta: Path, why: str, hint: str) -> DownloadError:
    """Delete a `.part` that can never become the file, and the error that says so."""
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    return DownloadError(f"download of {url} failed: {why}; the partial file was deleted. {hint}".rstrip())


def _attempt(url: str, part: Path, meta: Path, desc: str, bounds: _Bounds, progress: bool, hint: str) -> bool:
    """One request. True: `part` is complete. False: cut short (retry). Raises _Retry too."""
    offset, validator = _resume_point(url, part, meta)
    response = _open(url, part, offset, validator, bounds.read_timeout_s, hint)
    if response is None:
        return True  # the server says `part` already holds every byte
    with response:
        offset, total, mode = _start(response, url, part, meta, offset, hint)
        if bounds.size is not None and total is not None and total != bounds.size:
            raise _discard(url, part, meta, f"the server announces {total} bytes, the catalog says {bounds.size}", hint)
        limit = bounds.size if bounds.size is not None else total
        received = _stream(response, part, mode, offset, total, desc, progress, limit, bounds.stall_s)
        if limit is not None and received > limit:
            raise _discard(
                url, part, meta, f"the server sent more than the {limit} bytes expected (stopped at {received})", hint
            )
    total = total if total is not None else bounds.size
    if total is None:
        return True  # no length known: verification is the only check
    if received < total:
        log.info("%s: %d of %d bytes arrived", url, received, total)
        return False
    return True


def _resume_point(url: str, part: Path, meta: Path) -> tuple[int, str | None]:
    """Bytes already in `part` and the validator they came with; a leftover of another URL goes."""
    offset = part.stat().st_size if part.exists() else 0
    if not offset:
        return 0, None
    saved = read_json_object(meta)
    if saved.get("url") != url:
        log.info("discarding %s: it was not downloaded from %s", part, url)
        part.unlink()
        return 0, None
    return offset, saved.get("validator")


def _open(url: str, part: Path, offset: int, validator: str | None, timeout_s: float, hint: str):
    """The response to a (ranged) GET; None when a 416 says `part` is already whole."""
    headers = {"User-Agent": "elmo-onnx"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator  # a changed file comes back whole (200)
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
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
            f"download of {url} failed: the server answered HTTP {e.code} {e.reason}. {hint}".rstrip()
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise _Retry(f"{type(reason).__name__}: {reason}") from None


def _start(response, url: str, part: Path, meta: Path, offset: int, hint: str) -> tuple[int, int | None, str]:
    """Read the status line: where writing starts, the total length if known, the file mode."""
    length = _int_header(response.headers.get("Content-Length"))
    if response.status == 206 and offset:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
        if not match or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)
            raise _Retry(
                f"the server resumed at the wrong place (Content-Range {response.headers.get('Content-Range')!r})"
            )
        total = int(match.group(3)) if match.group(3) != "*" else offset + length if length is not None else None
        log.info("resuming %s at byte %d", url, offset)
        return offset, total, "ab"
    if response.status == 200:
        if offset:
            log.info("the server sent all of %s again (it ignored the range): restarting", url)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        meta.write_text(json.dumps({"url": url, "validator": validator}) + "\n", encoding="utf-8")
        return 0, length, "wb"
    raise DownloadError(
        f"download of {url} failed: unexpected HTTP {response.status} {response.reason}. {hint}".rstrip()
    )


def _stream(
    response,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    desc: str,
    progress: bool,
    limit: int | None,
    stall_s: float,
) -> int:
    """Append the body to `part`; the byte count it then holds (`limit + 1` once it passes `limit`).

    `read1` returns what has arrived instead of waiting for a whole chunk: a slow server shows
    progress, and the stall window sees every byte.
    """
    received = offset
    window_start, window_bytes = time.monotonic(), 0
    with (
        open(part, mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=None if progress else True,
            leave=False,
        ) as bar,
    ):
        try:
            while chunk := response.read1(CHUNK_BYTES):
                if limit is not None and received + len(chunk) > limit:
                    return limit + 1  # not written: the caller deletes the part
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                window_bytes += len(chunk)
                if time.monotonic() - window_start >= stall_s:
                    if window_bytes < STALL_MIN_BYTES:
                        raise _Stall(
                            f"the transfer stalled after {received} bytes: {window_bytes} bytes in the last "
                            f"{stall_s:g} s (the limit is {STALL_MIN_BYTES} per {ENV_STALL} seconds)"
                        )
                    window_start, window_bytes = time.monotonic(), 0
        except TimeoutError:
            out.flush()
            raise _Stall(f"the transfer stalled after {received} bytes: the server stopped sending") from None
        except (http.client.HTTPException, OSError) as e:
            out.flush()
            raise _Retry(f"the transfer broke after {received} bytes ({type(e).__name__}: {e})") from None
    return received


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def read_json_object(path: Path) -> dict:
    """A JSON object from a file; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
