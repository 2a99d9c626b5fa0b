"""An NPZ file (`numpy.savez`'s layout: a zip of `.npy` members, stored) written a member at a
time, in memory that does not grow with the number of members.

`zipfile.ZipFile` keeps a `ZipInfo` (about 400 bytes) per member until it writes the central
directory at the end: 200 MB for half a million sentences. Here each member's central
directory record is written, as it is made, to an unnamed temporary file beside the output
(gone with the process, whatever happens), and copied after the last member. Every member
carries ZIP64 sizes, so nothing limits the file or member sizes; `numpy.load` and `zipfile`
read the result as any NPZ.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

_ZIP64_VERSION = 45  # "version needed to extract" for ZIP64 extensions
_MADE_BY = (3 << 8) | _ZIP64_VERSION  # Unix, as zipfile writes it
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, zipfile's default date for members written from a stream
_MEMBER_MODE = 0o600 << 16  # zipfile's external attributes for members written from a stream
_FULL32 = 0xFFFFFFFF  # a 32-bit field whose value is in the ZIP64 extra field
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_CRC_OFFSET = 14  # of the CRC-32 field in a local header


class NpzWriter:
    """Arrays into an NPZ file, one `.npy` member per `add`.

    Args:
        path: the file to write (created or truncated).

    Raises:
        OSError: the file (or the temporary one beside it) cannot be written.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self._file = open(path, "w+b")
        try:
            self._directory = tempfile.TemporaryFile(dir=path.parent)
        except BaseException:
            self._file.close()
            raise
        self._members = 0

    def add(self, name: str, array: np.ndarray) -> None:
        """Write `array` as the member `name + ".npy"` (no pickles: object arrays are refused)."""
        member = f"{name}.npy".encode()
        offset = self._file.tell()
        # Sizes go in the ZIP64 extra field (patched below with the CRC), so a member may be any size.
        self._file.write(
            _LOCAL.pack(0x04034B50, _ZIP64_VERSION, 0, 0, 0, _DOS_DATE, 0, _FULL32, _FULL32, len(member), 20)
        )
        self._file.write(member + struct.pack("<HHQQ", 1, 16, 0, 0))
        data = _Counting(self._file)
        np.lib.format.write_array(data, array, allow_pickle=False)
        end = self._file.tell()
        self._file.seek(offset + _CRC_OFFSET)
        self._file.write(struct.pack("<I", data.crc))
        self._file.seek(offset + _LOCAL.size + len(member) + 4)
        self._file.write(struct.pack("<QQ", data.size, data.size))
        self._file.seek(end)
        self._directory.write(
            _CENTRAL.pack(
                0x02014B50,
                _MADE_BY,
                _ZIP64_VERSION,
                0,
                0,
                0,
                _DOS_DATE,
                data.crc,
                _FULL32,
                _FULL32,
                len(member),
                28,
                0,
                0,
                0,
                _MEMBER_MODE,
                _FULL32,
            )
        )
        self._directory.write(member + struct.pack("<HHQQQ", 1, 24, data.size, data.size, offset))
        self._members += 1

    def close(self) -> None:
        """Write the central directory and close the file."""
        try:
            start = self._file.tell()
            self._directory.seek(0)
            shutil.copyfileobj(self._directory, self._file)
            size = self._file.tell() - start
            end64 = self._file.tell()
            n = self._members
            self._file.write(
                _END64.pack(0x06064B50, _END64.size - 12, _MADE_BY, _ZIP64_VERSION, 0, 0, n, n, size, start)
            )
            self._file.write(_LOCATOR64.pack(0x07064B50, 0, end64, 1))
            self._file.write(
                _END.pack(0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), min(size, _FULL32), min(start, _FULL32), 0)
            )
            self._file.flush()
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without finishing the file (after a failure: the caller deletes it)."""
        self._directory.close()
        self._file.close()


class _Counting:
    """A write-only stream that passes bytes on and keeps their CRC-32 and count.

    Not a real file on purpose: `numpy.lib.format.write_array` then writes through `write` in
    bounded pieces instead of straight to the descriptor, so the CRC sees every byte.
    """

    def __init__(self, file):
        self._file = file
        self.crc = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return self._file.write(data)
