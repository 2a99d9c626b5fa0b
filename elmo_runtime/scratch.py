"""Temporary files and directories beside an output, named for the process that owns them.

A run writes its output under a hidden name beside the target (`.NAME.<pid>.<random><suffix>`)
and renames it into place once complete. A run that is killed (SIGKILL, the OOM killer) cannot
clean up; the PID in the name lets the next run for the same target remove what dead processes
left, and leave alone what a live one is still writing.

Files and directories are created with the modes a plain `open()` or `mkdir` would give them
(0o666 and 0o777 less the umask), not `tempfile`'s private 0o600/0o700: the renamed output is
meant to be read by others as any file the user makes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
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


def _candidate(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


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
    name = path.name
    prefix = f".{target_name}."
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    middle = name[len(prefix):len(name) - len(suffix)].split(".")
    if len(middle) != 2 or not middle[0].isdigit():
        return None
    return int(middle[0])


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
    return _remove(target, suffix, lambda pid: not _alive(pid))


def remove_own(target: Path, suffix: str) -> list[Path]:
    """Remove this process's own temporaries beside `target`.

    For cleanup after an interrupt: a signal can arrive between creating the path and
    returning its name to the caller, and then only the name pattern finds it.
    """
    return _remove(target, suffix, lambda pid: pid == os.getpid())


def _remove(target: Path, suffix: str, condemned) -> list[Path]:
    removed = []
    try:
        siblings = list(target.parent.glob(f".{target.name}.*{suffix}"))
    except OSError:
        return removed
    for path in siblings:
        pid = owner_pid(path, target.name, suffix)
        if pid is None or not condemned(pid):
            continue
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
