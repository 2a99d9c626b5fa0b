"""Temporary files and directories beside an output, named for the process that owns them.

A run writes its output under a hidden name beside the target (`.NAME.<pid>.<tag><random><suffix>`)
and renames it into place once complete. A run that is killed (SIGKILL, the OOM killer) cannot
clean up; the PID in the name lets the next run for the same target remove what dead processes
left, and leave alone what a live one is still writing.

A PID means something only on the host and in the PID namespace that gave it: a run in another
container sharing the volume, or on another NFS client, has PIDs this process cannot see. The
4 hex digits of `<tag>` name the host, boot and PID namespace (`HOST_TAG`); a temporary with
another tag is judged by age alone, and removed only once untouched for `FOREIGN_STALE_S`.

Files and directories are created with the modes a plain `open()` or `mkdir` would give them
(0o666 and 0o777 less the umask), not `tempfile`'s private 0o600/0o700: the renamed output is
meant to be read by others as any file the user makes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".partial"  # a folder being built (`staged_dir`)
OLD_SUFFIX = ".old"  # a replaced folder, between two renames (`replace_dir`)


def existing(target: Path) -> os.stat_result | None:
    """`lstat` of an output about to be written: None if it does not exist yet (its folder must)."""
    try:
        return os.lstat(target)
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise FileNotFoundError(f"output directory {target.parent} does not exist") from None
        return None


# A temporary from another host or PID namespace is left alone until it has not changed for a day.
FOREIGN_STALE_S = 24 * 3600.0


def _host_tag() -> str:
    """4 hex digits for this host, boot and PID namespace (where a PID means what `os.kill` sees)."""
    parts = [socket.gethostname()]
    for read in (
        lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        lambda: os.readlink("/proc/self/ns/pid"),
    ):
        try:
            parts.append(read())
        except OSError:
            parts.append("?")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:4]


HOST_TAG = _host_tag()


def _candidate(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{HOST_TAG}{secrets.token_hex(2)}{suffix}")


def create_file(target: Path, suffix: str) -> Path:
    """A new empty file beside `target`, mode 0o666 less the umask."""
    for _ in range(100):
        path = _candidate(target, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def create_dir(target: Path, suffix: str) -> Path:
    """A new empty directory beside `target`, mode 0o777 less the umask."""
    for _ in range(100):
        path = _candidate(target, suffix)
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def owner_pid(path: Path, target_name: str, suffix: str) -> int | None:
    """The PID in a name made by `create_file`/`create_dir` for `target_name`, else None."""
    owner = _owner(path, target_name, suffix)
    return None if owner is None else owner[0]


def _owner(path: Path, target_name: str, suffix: str) -> tuple[int, str] | None:
    """`(pid, host tag)` from a name made by `create_file`/`create_dir` for `target_name`."""
    name = path.name
    prefix = f".{target_name}."
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    middle = name[len(prefix) : len(name) - len(suffix)].split(".")
    if len(middle) != 2 or not middle[0].isdigit() or len(middle[1]) != 8:
        return None
    return int(middle[0]), middle[1][:4]


def _untouched_for(path: Path) -> float:
    """Seconds since `path` (or, for a folder, anything directly in it) last changed."""
    try:
        times = [os.lstat(path).st_mtime]
        if path.is_dir() and not path.is_symlink():
            times += [os.lstat(p).st_mtime for p in path.iterdir()]
    except OSError:
        return 0.0
    return time.time() - max(times)


def is_temporary(path: Path, suffix: str) -> bool:
    """Whether `path` is named as `create_file`/`create_dir` name things, for any target."""
    return re.fullmatch(r"\..+\.\d+\.[0-9a-f]{8}" + re.escape(suffix), path.name) is not None


@contextlib.contextmanager
def staged_dir(target: Path, suffix: str = STAGING_SUFFIX) -> Iterator[Path]:
    """A new empty folder beside `target` to build it in; gone afterwards unless renamed into place.

    What killed processes left beside `target` (staging and replaced folders, named with their
    PIDs) is removed first. Rename the finished folder with `replace_dir` inside the block.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in (suffix, OLD_SUFFIX):
        remove_stale(target, stale)
    staging = None
    try:
        staging = create_dir(target, suffix)
        yield staging
    finally:
        # By the variable: another thread of this process may be staging the same target.
        # A kill between the mkdir and the assignment leaves a folder the next run removes.
        if staging is not None and os.path.lexists(staging):
            remove_path(staging)


def replace_dir(new: Path, target: Path) -> None:
    """Rename the folder `new` to `target`; a folder already at `target` is replaced.

    The old folder is moved aside (`.NAME.<pid>.<random>.old`) and deleted once `new` is in
    place; if the second rename fails or is interrupted, it is put back. A kill between the
    two leaves the old folder aside, for the next `staged_dir` or `replace_dir` to remove.
    """
    remove_stale(target, OLD_SUFFIX)
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = create_dir(target, OLD_SUFFIX)
    os.rename(target, old)  # onto the empty folder just made
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(target: Path, suffix: str) -> list[Path]:
    """Remove what dead processes left beside `target` (names from `create_file`/`create_dir`).

    Returns:
        The paths removed.
    """

    def dead(pid: int, tag: str, path: Path) -> bool:
        if tag == HOST_TAG:
            return not _alive(pid)
        return _untouched_for(path) > FOREIGN_STALE_S  # another host or namespace: its PID means nothing here

    return _remove(target, suffix, dead)


def remove_own(target: Path, suffix: str) -> list[Path]:
    """Remove this process's own temporaries beside `target`.

    For cleanup after an interrupt: a signal can arrive between creating the path and
    returning its name to the caller, and then only the name pattern finds it.
    """
    return _remove(target, suffix, lambda pid, tag, path: pid == os.getpid() and tag == HOST_TAG)


def _remove(target: Path, suffix: str, condemned) -> list[Path]:
    removed = []
    try:
        siblings = list(target.parent.glob(f".{target.name}.*{suffix}"))
    except OSError:
        return removed
    for path in siblings:
        owner = _owner(path, target.name, suffix)
        if owner is None or not condemned(owner[0], owner[1], path):
            continue
        pid = owner[0]
        try:
            remove_path(path)
        except OSError as e:
            log.warning("could not remove %s, left by process %d: %s", path, pid, e)
            continue
        log.info("removed %s, left by process %d", path, pid)
        removed.append(path)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def refuse_foreign(folder: Path, ours: set[str], what: str) -> None:
    """Refuse to replace `folder` if it holds anything but the files named in `ours`.

    `--force` replaces an earlier output, never what a user keeps beside it: a marker file alone
    (`elmo.json` is a common name) does not make a folder ours. A listed name that is a folder is
    foreign too: no output of ours has sub-folders.

    Raises:
        FileExistsError: naming up to five foreign entries (and how many more).
    """
    foreign = sorted(
        p.name + ("/" if p.is_dir() and not p.is_symlink() else "")
        for p in folder.iterdir()
        if p.name not in ours or (p.is_dir() and not p.is_symlink())
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"output {folder} holds what is not part of {what}: {shown}; refusing to replace it "
            "(even with --force): move those out or choose another output"
        )


def current_umask() -> int:
    """The process's umask (read by setting it and back: there is no other portable way)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_to_umask(directory: Path) -> None:
    """Give a folder made private (`tempfile.mkdtemp`: 0700) and its files the modes of a plain
    `mkdir` and `open()`: a downloaded package is meant to be read as any folder the user makes."""
    mask = current_umask()
    directory.chmod(0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file() and not f.is_symlink():
            f.chmod(0o666 & ~mask)
